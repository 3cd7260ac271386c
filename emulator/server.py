"""Serving an emulator over HTTP/1.1, h2c and HTTPS (HTTP/2 by ALPN) on Hypercorn's trio worker.

Owns binding the listeners (a port in use is a one-line `ListenerError`), the TLS files, the
Hypercorn configuration, service background tasks, and graceful shutdown: when the shutdown
trigger fires, services first answer every waiting request (long-polls, sync executes), then
Hypercorn stops accepting and gives in-flight requests `graceful_timeout` to finish.
The only module that imports hypercorn (besides the compatibility patches it applies).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from . import hypercorn_compat
from .app import Emulator, create_asgi
from .service import Endpoints
from .settings import Settings
from .statefile import collect, save_state
from .tls import ensure_certificates

log = logging.getLogger("emulator.server")

BACKLOG = 4096


class ListenerError(Exception):
    """A listener could not be opened; the message is one line naming the address."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ListenerError(f"port {port} on {host} is already in use") from None
        if error.errno == errno.EACCES:
            raise ListenerError(f"not allowed to listen on port {port} on {host}") from None
        raise ListenerError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def _advertised_host(host: str) -> str:
    """The host name to put in URLs: a wildcard bind is reached through localhost."""
    return "localhost" if host in ("0.0.0.0", "::", "") else host


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.alpn_protocols = ["h2", "http/1.1"]
    config.graceful_timeout = settings.graceful_timeout
    config.keep_alive_timeout = settings.keep_alive_timeout
    # Clients such as httpx treat the GOAWAY that ends a connection after N requests as an error.
    config.keep_alive_max_requests = 2**31
    config.backlog = BACKLOG
    config.h2_max_concurrent_streams = 1000
    config.h11_max_incomplete_size = settings.max_header_bytes
    config.h2_max_header_list_size = settings.max_header_bytes
    # Never cut a request while the app is handling it: long-polls hold for many seconds.
    config.read_timeout = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # The access log is written by the request log middleware, redacted; Hypercorn's records
    # carry every request header (Authorization, Module-Auth-Token) in their arguments.
    config.accesslog = None
    return config


async def serve(
    emulator: Emulator,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, then serve until `shutdown_trigger` returns (or forever); reports the endpoints."""
    hypercorn_compat.apply()
    settings = emulator.settings
    secure: list[socket.socket] = []
    insecure: list[socket.socket] = []
    try:
        if settings.http_enabled:
            insecure.append(_bind(settings.host, settings.port))
        if settings.tls_enabled:
            secure.append(_bind(settings.host, settings.tls_port))
    except ListenerError:
        for sock in (*secure, *insecure):
            sock.close()
        raise

    config = hypercorn_config(settings)
    endpoints = emulator.endpoints
    shown_host = _advertised_host(settings.host)
    if insecure:
        endpoints.http_url = _url("http", shown_host, insecure[0].getsockname()[1])
    if secure:
        files = ensure_certificates(settings.state_dir, settings.cert_hosts)
        config.certfile = str(files.cert_path)
        config.keyfile = str(files.key_path)
        endpoints.https_port = secure[0].getsockname()[1]
        endpoints.https_url = _url("https", shown_host, endpoints.https_port)
        endpoints.ca_path = files.ca_path
    # The certificate always covers localhost; module libraries check the host name against it.
    loopback = shown_host in ("127.0.0.1", "::1", "localhost")
    endpoints.runtime_host = "localhost" if loopback else shown_host
    endpoints.base_url = (
        settings.base_url or endpoints.http_url or endpoints.https_url or ""
    ).rstrip("/")
    app = create_asgi(emulator)

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        log.info("shutting down: answering waiting requests, then draining")
        emulator.begin_shutdown()

    sockets = Sockets(secure_sockets=secure, insecure_sockets=insecure, quic_sockets=[])

    # One save at a time, so the last save at shutdown is the one that stays on disk.
    saving = trio.Lock()

    async with trio.open_nursery() as nursery:

        async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
            await worker_serve(
                wrap_app(app, config.wsgi_max_body_size, "asgi"),
                config,
                sockets=sockets,
                shutdown_trigger=trigger,
                task_status=task_status,
            )
            # Hypercorn has drained; save the durable state a last time (--state-file), then
            # the services' background work ends with it.
            await save_state_file(emulator, saving)
            nursery.cancel_scope.cancel()

        for service in emulator.services.values():
            await nursery.start(service.run)
        await nursery.start(run_http)
        if settings.state_file is not None:
            nursery.start_soon(save_state_periodically, emulator, saving)
        task_status.started(endpoints)


async def save_state_file(emulator: Emulator, saving: trio.Lock) -> None:
    """Save the services' durable state to `--state-file`, if set. A failure is logged (one
    line, no secret) and does not stop the server."""
    path = emulator.settings.state_file
    if path is None:
        return
    # Snapshot on the trio thread (a consistent view), write in a worker thread (blocking I/O).
    async with saving:
        document = collect(emulator.services)
        try:
            await trio.to_thread.run_sync(save_state, path, document)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            log.error("cannot save the state file %s: %s", path, reason)


async def save_state_periodically(emulator: Emulator, saving: trio.Lock) -> None:
    """Save the durable state every `state_save_interval` seconds (a timer, not a wait)."""
    while True:
        await trio.sleep(emulator.settings.state_save_interval)
        await save_state_file(emulator, saving)
