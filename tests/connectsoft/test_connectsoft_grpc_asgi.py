"""The three RPCs at the ASGI boundary, as an HTTP/2 server with trailers would drive them.

The real app of the service (`create_asgi`) gets an `http` scope that offers the
`http.response.trailers` extension, a request body of gRPC frames and, when the test says so, a
disconnect (what a client's RST_STREAM becomes). Messages are the protobuf classes clients use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from connectsoft_builders import T0, seed_data

from emulator.connectsoft import protos
from emulator.connectsoft.engine import TrioTimeClock
from emulator.platform.seeds import seed_from_mapping
from emulator.platform.settings import Settings
from emulator.services import registered_services
from emulator.web.app import build_emulator, create_asgi
from emulator.web.grpcwire import MessageDecoder, encode_message

ENV = "env-9f1c2b7d"


class Exchange:
    """One request through the app: what it sent back, message by message."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.disconnect = trio.Event()
        self.changed = trio.lowlevel.ParkingLot()
        self.done = False

    @property
    def head(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def trailers(self) -> dict[bytes, bytes]:
        """The trailers, or the head of a Trailers-Only answer."""
        for message in self.sent:
            if message["type"] == "http.response.trailers":
                return dict(message["headers"])
        return self.head

    def messages(self, kind: Any) -> list[Any]:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        decoder = MessageDecoder()
        frames = decoder.feed(body)
        decoder.finish()
        return [kind.FromString(frame) for frame in frames]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self.changed.park()


class App:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        seed = seed_from_mapping({"connectsoft": seed_data(**overrides)}, registered_services())
        self.emulator = build_emulator(
            Settings(state_dir=tmp_path, ephemeral_ports=True),
            seed,
            clock=TrioTimeClock.starting_at(T0),
        )
        site = self.emulator.sites["connectsoft"]
        self.instance: Any = site.instance
        self.asgi = create_asgi(self.emulator, site)

    def token(self, **overrides: Any) -> str:
        args: dict[str, Any] = {
            "client_id": "portal",
            "client_secret": "portal-secret-value",
            "grant_type": "client_credentials",
            "scope": None,
            "tenant": None,
            "now": self.instance.engine.now(),
        }
        args.update(overrides)
        return str(self.instance.issuer.issue(**args).access_token)

    async def call(
        self,
        nursery: trio.Nursery,
        path: str,
        body: bytes,
        *,
        token: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        trailers: bool = True,
    ) -> Exchange:
        exchange = Exchange()
        head = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
        if token is not None:
            head.append((b"authorization", f"Bearer {token}".encode()))
        head += headers or []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "2",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": head,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "extensions": {"http.response.trailers": {}} if trailers else {},
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await exchange.disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            exchange.sent.append(message)
            exchange.changed.unpark_all()

        async def run() -> None:
            await self.asgi(scope, receive, send)
            exchange.done = True
            exchange.changed.unpark_all()

        nursery.start_soon(run)
        return exchange


def frame(message: Any) -> bytes:
    return encode_message(message.SerializeToString())


INVENTORY = "/connectsoft.runtime.v1.RuntimeInventory/GetServices"
HEALTH = "/connectsoft.runtime.v1.RuntimeHealth/StreamHealth"
DRIFT = "/connectsoft.runtime.v1.RuntimeDrift/GetFindings"


async def finished(exchange: Exchange) -> Exchange:
    await exchange.wait_for(lambda: exchange.done)
    return exchange


async def test_get_services(nursery: trio.Nursery, tmp_path: Path) -> None:
    app = App(tmp_path)
    request = protos.GetServicesRequest(environment_id=ENV, tenant_id="connectsoft")
    exchange = await finished(await app.call(nursery, INVENTORY, frame(request), token=app.token()))
    assert exchange.head[b"content-type"] == b"application/grpc"
    assert exchange.trailers[b"grpc-status"] == b"0"
    (reply,) = exchange.messages(protos.GetServicesResponse)
    assert reply.status == "Active"
    services = {s.service_id: s for s in reply.services}
    assert services["module-reservations-api"].version == "1.4.2"
    assert services["module-reservations-api"].replicas == 2
    assert services["module-reservations-api"].health_status == "Healthy"


@pytest.mark.parametrize(
    ("token_args", "tenant", "status", "text"),
    [
        (None, "connectsoft", b"16", b"Unauthenticated"),
        ({"scope": "runtime.health.read"}, "connectsoft", b"7", b"InsufficientScope"),
        ({}, "other", b"7", b"TenantMismatch"),
        ({"tenant": "other"}, "other", b"7", b"TenantMismatch"),
    ],
)
async def test_get_services_refusals(
    nursery: trio.Nursery,
    tmp_path: Path,
    token_args: dict[str, Any] | None,
    tenant: str,
    status: bytes,
    text: bytes,
) -> None:
    app = App(tmp_path)
    token = None if token_args is None else app.token(**token_args)
    request = protos.GetServicesRequest(environment_id=ENV, tenant_id=tenant)
    exchange = await finished(await app.call(nursery, INVENTORY, frame(request), token=token))
    # Trailers-Only: the status and no message.
    assert exchange.trailers[b"grpc-status"] == status
    assert text in exchange.trailers[b"grpc-message"]
    assert exchange.messages(protos.GetServicesResponse) == []


async def test_get_findings(nursery: trio.Nursery, tmp_path: Path) -> None:
    app = App(tmp_path)
    engine = app.instance.engine
    engine.call(lambda now: engine.state.apply_drift_rule("image-lag", now))
    request = protos.GetFindingsRequest(environment_id=ENV)
    exchange = await finished(await app.call(nursery, DRIFT, frame(request), token=app.token()))
    assert exchange.trailers[b"grpc-status"] == b"0"
    (reply,) = exchange.messages(protos.GetFindingsResponse)
    assert [(f.kind, f.desired, f.actual, f.severity) for f in reply.findings] == [
        ("ImageVersionMismatch", "1.4.2", "1.4.1", "High")
    ]
    assert reply.findings[0].finding_id.startswith("drift-")


async def test_unknown_environment_is_not_found(nursery: trio.Nursery, tmp_path: Path) -> None:
    app = App(tmp_path)
    request = protos.GetFindingsRequest(environment_id="env-nowhere")
    exchange = await finished(await app.call(nursery, DRIFT, frame(request), token=app.token()))
    assert exchange.trailers[b"grpc-status"] == b"5"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\x00\x00\x00\x00\x03abc", [], b"3"),
        (b"\x00\x00\x00", [], b"13"),
        (b"", [], b"13"),
        (
            frame(protos.GetFindingsRequest(environment_id=ENV)),
            [(b"grpc-encoding", b"gzip")],
            b"12",
        ),
        (frame(protos.GetFindingsRequest(environment_id=ENV)), [(b"grpc-timeout", b"soon")], b"3"),
    ],
)
async def test_bad_calls(
    nursery: trio.Nursery,
    tmp_path: Path,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    status: bytes,
) -> None:
    app = App(tmp_path)
    exchange = await finished(
        await app.call(nursery, DRIFT, body, token=app.token(), headers=headers)
    )
    assert exchange.trailers[b"grpc-status"] == status


async def test_without_trailers_the_answer_is_unimplemented(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = App(tmp_path)
    request = frame(protos.GetFindingsRequest(environment_id=ENV))
    exchange = await finished(
        await app.call(nursery, DRIFT, request, token=app.token(), trailers=False)
    )
    assert exchange.trailers[b"grpc-status"] == b"12"


async def test_stream_health_until_the_client_cancels(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = App(tmp_path)
    engine = app.instance.engine
    request = protos.StreamHealthRequest(service_id="module-reservations-api")
    exchange = await app.call(nursery, HEALTH, frame(request), token=app.token())

    def count() -> int:
        return len(exchange.messages(protos.HealthUpdate))

    await exchange.wait_for(lambda: count() == 1)
    assert engine.health.statistics()["open_streams"] == 1
    engine.call(
        lambda now: engine.state.set_unhealthy(ENV, "module-reservations-api", "sql", True, now)
    )
    await exchange.wait_for(lambda: count() == 2)
    engine.call(
        lambda now: engine.state.set_unhealthy(ENV, "module-reservations-api", "sql", False, now)
    )
    await exchange.wait_for(lambda: count() == 3)
    updates = exchange.messages(protos.HealthUpdate)
    assert [u.status for u in updates] == ["Healthy", "Unhealthy", "Healthy"]
    assert [(c.name, c.status) for c in updates[1].checks][1] == ("sql", "Unhealthy")
    assert updates[0].checks[1].duration_ms == 12
    exchange.disconnect.set()
    await finished(exchange)
    # The stream is gone and its subscription with it.
    assert engine.health.statistics()["open_streams"] == 0


async def test_stream_health_deadline(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    app = App(tmp_path)
    request = protos.StreamHealthRequest(service_id="module-reservations-api", environment_id=ENV)
    started = trio.current_time()
    exchange = await finished(
        await app.call(
            nursery, HEALTH, frame(request), token=app.token(), headers=[(b"grpc-timeout", b"2S")]
        )
    )
    assert trio.current_time() - started == pytest.approx(2)
    assert len(exchange.messages(protos.HealthUpdate)) == 1
    assert exchange.trailers[b"grpc-status"] == b"4"
    assert app.instance.engine.health.statistics()["open_streams"] == 0


async def test_reset_ends_open_streams(nursery: trio.Nursery, tmp_path: Path) -> None:
    app = App(tmp_path)
    request = protos.StreamHealthRequest(service_id="module-reservations-api")
    exchange = await app.call(nursery, HEALTH, frame(request), token=app.token())
    await exchange.wait_for(lambda: len(exchange.messages(protos.HealthUpdate)) == 1)
    app.instance.reset()
    await finished(exchange)
    assert exchange.trailers[b"grpc-status"] == b"14"
