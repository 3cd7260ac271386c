"""Serving an emulator: HTTP/1.1 and h2c on one port, HTTPS (HTTP/2 by ALPN) on another.

Owns binding the listeners (a port in use is a one-line `ListenerError`), the TLS files,
accepting connections and choosing who serves each, the service background tasks and graceful
shutdown: when the shutdown trigger fires, services first answer every waiting request
(long-polls, sync executes), then the server stops accepting and gives in-flight requests
`graceful_timeout`.

Two servers speak HTTP (`Settings.http_server`). By default the emulator's own: HTTP/1.1 (plain
or TLS) goes to transport.h1, HTTP/2 (h2c with prior knowledge, or ALPN "h2") to transport.h2;
Hypercorn then only provides the configuration record (TLS context) and the ASGI lifespan.
With "hypercorn", Hypercorn's trio worker serves everything, with the patches of
emulator.transport.hypercorn_compat (slower: see benchmarks/README.md).
The only module that imports hypercorn (besides the compatibility patches it applies).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from ..platform.service import Endpoints
from ..platform.settings import Settings
from ..platform.statefile import capture, save_state
from ..web.app import Emulator, Site, create_asgi
from . import hypercorn_compat
from .h1 import H1Server
from .h2 import H2Server
from .httpcommon import ServerLimits
from .hypercorn_compat import BatchingListener
from .tls import TlsFiles, ensure_certificates

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
    # The head timeout of Hypercorn mode (emulator.transport.hypercorn_compat), as ours.
    config.emulator_head_timeout = settings.body_timeout  # type: ignore[attr-defined]
    return config


@attrs.define
class Bound:
    """One service's sockets, bound before anything is served."""

    site: Site
    insecure: list[socket.socket] = attrs.field(factory=list)
    secure: list[socket.socket] = attrs.field(factory=list)


def bind_all(emulator: Emulator) -> list[Bound]:
    """Bind every running service's listeners (all or none: on a failure, close what was bound
    and raise the one-line ListenerError)."""
    settings = emulator.settings
    bound: list[Bound] = []
    try:
        for index, site in enumerate(emulator.sites.values()):
            http_port, https_port = settings.listener_ports(
                site.name,
                primary=index == 0,
                defaults=(site.service.default_http_port, site.service.default_https_port),
            )
            entry = Bound(site)
            bound.append(entry)
            if settings.http_enabled:
                entry.insecure.append(_bind(settings.host, http_port))
            if settings.tls_enabled:
                entry.secure.append(_bind(settings.host, https_port))
    except ListenerError:
        for entry in bound:
            for sock in (*entry.secure, *entry.insecure):
                sock.close()
        raise
    return bound


async def serve(
    emulator: Emulator,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every service's listeners, then serve until `shutdown_trigger` returns (or
    forever). Reports the primary service's endpoints (every service's are in
    `emulator.sites[name].endpoints`) once all listeners are bound and the endpoints file, if
    asked for, is written."""
    settings = emulator.settings
    if settings.http_server == "hypercorn":
        hypercorn_compat.apply()
    bound = bind_all(emulator)
    files = None
    if any(entry.secure for entry in bound):
        files = ensure_certificates(settings.state_dir, settings.cert_hosts)
    primary = emulator.primary
    for entry in bound:
        fill_endpoints(settings, entry, files, primary=entry.site is primary)
    if settings.endpoints_file is not None:
        write_endpoints_file(settings.endpoints_file, emulator)

    # One trigger for every service's server: the first to see shutdown answers waiting
    # requests (begin_shutdown) once, then every server drains.
    stopping = trio.Event()

    async def wait_for_shutdown() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        log.info("shutting down: answering waiting requests, then draining")
        emulator.begin_shutdown()
        stopping.set()

    async def trigger() -> None:
        await stopping.wait()

    # One save at a time, so the last save at shutdown is the one that stays on disk.
    saving = trio.Lock()

    async with trio.open_nursery() as nursery:

        async def run_site(entry: Bound, task_status: trio.TaskStatus[Any]) -> None:
            config = hypercorn_config(settings)
            if files is not None:
                config.certfile = str(files.cert_path)
                config.keyfile = str(files.key_path)
            app = create_asgi(emulator, entry.site)
            if settings.http_server == "hypercorn":
                await worker_serve(
                    wrap_app(
                        hypercorn_compat.wait_for_body_request(app),
                        config.wsgi_max_body_size,
                        "asgi",
                    ),
                    config,
                    sockets=Sockets(
                        secure_sockets=entry.secure,
                        insecure_sockets=entry.insecure,
                        quic_sockets=[],
                    ),
                    shutdown_trigger=trigger,
                    task_status=task_status,
                )
            else:
                connections = Connections(emulator, entry.site, app, config)
                await connections.serve(
                    entry.secure, entry.insecure, trigger, task_status=task_status
                )

        async def run_http(task_status: trio.TaskStatus[None]) -> None:
            async with trio.open_nursery() as sites:
                for entry in bound:
                    await sites.start(run_site, entry)
                sites.start_soon(wait_for_shutdown)
                task_status.started()
            # Every connection of every service has drained; save the durable state a last
            # time (--state-file), then the services' background work ends with it.
            await save_state_file(emulator, saving)
            nursery.cancel_scope.cancel()

        for site in emulator.sites.values():
            await nursery.start(site.instance.run)
        await nursery.start(run_http)
        if settings.state_file is not None:
            nursery.start_soon(save_state_periodically, emulator, saving)
        task_status.started(primary.endpoints)


def fill_endpoints(
    settings: Settings, entry: Bound, files: TlsFiles | None, *, primary: bool
) -> None:
    """Record where a service listens (URLs, ports, CA) once its sockets are bound."""
    endpoints = entry.site.endpoints
    shown_host = _advertised_host(settings.host)
    if entry.insecure:
        endpoints.http_port = entry.insecure[0].getsockname()[1]
        endpoints.http_url = _url("http", shown_host, endpoints.http_port)
    if entry.secure and files is not None:
        endpoints.https_port = entry.secure[0].getsockname()[1]
        endpoints.https_url = _url("https", shown_host, endpoints.https_port)
        endpoints.ca_path = files.ca_path
    # The certificate always covers localhost; module libraries check the host name against it.
    loopback = shown_host in ("127.0.0.1", "::1", "localhost")
    endpoints.runtime_host = "localhost" if loopback else shown_host
    # --base-url is what the primary service advertises; the others advertise their listener.
    base = settings.base_url if primary else None
    endpoints.base_url = (base or endpoints.http_url or endpoints.https_url or "").rstrip("/")


def endpoints_document(emulator: Emulator) -> dict[str, Any]:
    """What `--endpoints-file` holds: every service's URLs, the CA and the process id."""
    ca = next(
        (site.endpoints.ca_path for site in emulator.sites.values() if site.endpoints.ca_path), None
    )
    return {
        "services": {
            name: {"http": site.endpoints.http_url, "https": site.endpoints.https_url}
            for name, site in emulator.sites.items()
        },
        "ca": None if ca is None else str(ca),
        "pid": os.getpid(),
    }


def write_endpoints_file(path: Path, emulator: Emulator) -> None:
    """Write the endpoints document atomically (a temporary file beside it, then a rename), so
    a script polling for the file never reads half of it."""
    data = json.dumps(endpoints_document(emulator), indent=2).encode() + b"\n"
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class Connections:
    """Accepting and serving connections: HTTP/1.1 on the emulator's own server (transport.h1),
    HTTP/2 (h2c with prior knowledge, or ALPN "h2" over TLS) on its own HTTP/2 server
    (emulator.transport.h2).

    Shutdown mirrors Hypercorn's own worker: stop accepting, tell every connection (idle ones
    close at once, busy ones after their response), give them `graceful_timeout`, then cut.
    """

    def __init__(self, emulator: Emulator, site: Site, app: Any, config: Config) -> None:
        settings = emulator.settings
        self.config = config
        self.lifespan_state: dict[str, Any] = {}
        limits = ServerLimits(
            max_header_bytes=settings.max_header_bytes,
            keep_alive_timeout=settings.keep_alive_timeout,
            head_timeout=settings.body_timeout,
            send_timeout=settings.body_timeout,
        )
        self.h1 = H1Server(app, limits, site.families, self.lifespan_state)
        self.h2 = H2Server(app, limits, site.families, self.lifespan_state)
        self.lifespan_app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self.ssl_context: ssl.SSLContext | None = None

    async def _plain(self, stream: trio.SocketStream) -> None:
        try:
            preface = await self.h1.serve_connection(stream, scheme="http", sniff_h2=True)
            if preface is not None:
                await self.h2.serve_connection(stream, scheme="http", initial=preface)
        except Exception as error:
            log.error("connection failed; dropped it", exc_info=error)

    async def _secure(self, stream: trio.SocketStream) -> None:
        assert self.ssl_context is not None
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(self.config.ssl_handshake_timeout):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError):
            await trio.aclose_forcefully(tls)
            return
        try:
            if tls.selected_alpn_protocol() == "h2":
                await self.h2.serve_connection(tls, scheme="https")
            else:
                await self.h1.serve_connection(tls, scheme="https")
        except Exception as error:
            log.error("connection failed; dropped it", exc_info=error)

    async def serve(
        self,
        secure: list[socket.socket],
        insecure: list[socket.socket],
        trigger: Callable[[], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if secure:
            self.ssl_context = self.config.create_ssl_context()
        lifespan = Lifespan(self.lifespan_app, self.config, self.lifespan_state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as timers:
                timers.start_soon(self.h1.expire_connections)
                timers.start_soon(self.h1.watch_disconnects)
                timers.start_soon(self.h2.expire_connections)
                await self._serve_until(secure, insecure, trigger, task_status)
                timers.cancel_scope.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _serve_until(
        self,
        secure: list[socket.socket],
        insecure: list[socket.socket],
        trigger: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as connections:
            listeners: list[tuple[BatchingListener, Callable[..., Awaitable[None]]]] = [
                *((_listener(sock), self._secure) for sock in secure),
                *((_listener(sock), self._plain) for sock in insecure),
            ]
            async with trio.open_nursery() as accepting:
                for listener, handler in listeners:
                    accepting.start_soon(
                        partial(
                            trio.serve_listeners, handler, [listener], handler_nursery=connections
                        )
                    )
                task_status.started()
                await trigger()
                accepting.cancel_scope.cancel()
            for listener, _ in listeners:
                await listener.aclose()
            self.h1.drain()
            self.h2.drain()
            connections.cancel_scope.deadline = trio.current_time() + self.config.graceful_timeout


def _listener(sock: socket.socket) -> BatchingListener:
    return BatchingListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))


async def save_state_file(emulator: Emulator, saving: trio.Lock) -> None:
    """Save the services' durable state to `--state-file`, if set. A failure is logged (one
    line, no secret) and does not stop the server."""
    path = emulator.settings.state_file
    if path is None:
        return
    # Capture on the trio thread (a consistent view of what may still change); finish the
    # services' data and write in a worker thread (CPU and blocking I/O).
    async with saving:
        document = capture(emulator.services, emulator.carried_state)
        try:
            await trio.to_thread.run_sync(save_state, path, document)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            log.error("cannot save the state file %s: %s", path, reason)
        except Exception:
            # A service's rendering failed (a bug): the old file stays, the server goes on.
            log.exception("cannot save the state file %s", path)


# The most of the time periodic saves may take: after a save of T seconds the next one waits
# at least T / SAVE_SHARE (a big state's 6-second save then comes every minute, not every 30 s).
SAVE_SHARE = 0.1


async def save_state_periodically(
    emulator: Emulator, saving: trio.Lock, *, elapsed: Callable[[], float] = time.perf_counter
) -> None:
    """Save the durable state every `state_save_interval` seconds (a timer, not a wait), or
    less often when saves are long: they never take more than SAVE_SHARE of the time.
    `elapsed` measures a save (a real clock: the save's work is in a worker thread)."""
    interval = emulator.settings.state_save_interval
    pause = interval
    while True:
        await trio.sleep(pause)
        started = elapsed()
        await save_state_file(emulator, saving)
        pause = max(interval, (elapsed() - started) / SAVE_SHARE)
