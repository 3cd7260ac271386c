"""The real, unmodified grpcio client against the emulator's HTTP/2 server, over h2c and TLS.

All three RPCs, status codes in trailers, a server stream the client cancels, and a deadline.
The client is synchronous, so it runs in a worker thread; the emulator runs in the test's trio
loop, and the worker reaches back into it (trio.from_thread) to change a service's health.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
import trio
from connectsoft_builders import seed_data

from emulator.connectsoft import protos

ENV = "env-9f1c2b7d"
PREFIX = "/connectsoft.runtime.v1"
TRANSPORTS = ["h2c", "tls"]
# The emulator's own HTTP/2 server and the Hypercorn mode.
SERVERS = ["emulator", "hypercorn"]


async def start(start_emulator: Any, tls: bool, server: str = "emulator") -> tuple[Any, str]:
    running = await start_emulator({"connectsoft": seed_data()}, http_server=server)
    async with running.client(service="connectsoft") as client:
        response = await client.post(
            "/connect/token",
            data={"grant_type": "client_credentials"},
            auth=("portal", "portal-secret-value"),
        )
    return running, str(response.json()["access_token"])


def open_channel(running: Any, tls: bool) -> grpc.Channel:
    options = [("grpc.enable_http_proxy", 0)]
    if not tls:
        port = running.emulator.sites["connectsoft"].endpoints.http_port
        return grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    port = running.emulator.sites["connectsoft"].endpoints.https_port
    credentials = grpc.ssl_channel_credentials(root_certificates=running.ca_path.read_bytes())
    return grpc.secure_channel(f"localhost:{port}", credentials, options=options)


def unary(channel: grpc.Channel, method: str, response: Any) -> Callable[..., Any]:
    return channel.unary_unary(
        f"{PREFIX}.{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response.FromString,
    )


def metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_get_services_and_findings(start_emulator: Any, transport: str, server: str) -> None:
    running, token = await start(start_emulator, transport == "tls", server)
    engine = running.emulator.services["connectsoft"].engine
    engine.call(lambda now: engine.state.apply_drift_rule("image-lag", now))

    def calls() -> tuple[Any, Any]:
        with open_channel(running, transport == "tls") as channel:
            services = unary(channel, "RuntimeInventory/GetServices", protos.GetServicesResponse)(
                protos.GetServicesRequest(environment_id=ENV, tenant_id="connectsoft"),
                metadata=metadata(token),
                timeout=10,
            )
            findings = unary(channel, "RuntimeDrift/GetFindings", protos.GetFindingsResponse)(
                protos.GetFindingsRequest(environment_id=ENV), metadata=metadata(token), timeout=10
            )
        return services, findings

    with trio.fail_after(30):
        services, findings = await trio.to_thread.run_sync(calls)
    assert services.status == "Active"
    assert sorted(s.service_id for s in services.services) == [
        "module-billing-worker",
        "module-reservations-api",
    ]
    assert [(f.kind, f.desired, f.actual) for f in findings.findings] == [
        ("ImageVersionMismatch", "1.4.2", "1.4.1")
    ]


@pytest.mark.parametrize(
    ("token_kind", "tenant", "code"),
    [
        ("none", "connectsoft", grpc.StatusCode.UNAUTHENTICATED),
        ("forged", "connectsoft", grpc.StatusCode.UNAUTHENTICATED),
        ("valid", "other", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_refusals_are_status_codes(
    start_emulator: Any, token_kind: str, tenant: str, code: grpc.StatusCode
) -> None:
    running, token = await start(start_emulator, False)
    given = {"none": [], "forged": metadata(token[:-4] + "AAAA"), "valid": metadata(token)}

    def call() -> tuple[grpc.StatusCode, str]:
        with open_channel(running, False) as channel:
            try:
                unary(channel, "RuntimeInventory/GetServices", protos.GetServicesResponse)(
                    protos.GetServicesRequest(environment_id=ENV, tenant_id=tenant),
                    metadata=given[token_kind],
                    timeout=10,
                )
            except grpc.RpcError as error:
                return error.code(), error.details()  # type: ignore[attr-defined]
        raise AssertionError("the call succeeded")

    with trio.fail_after(30):
        got, details = await trio.to_thread.run_sync(call)
    assert got == code
    assert token not in details


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_health_until_cancelled(
    start_emulator: Any, transport: str, server: str
) -> None:
    running, token = await start(start_emulator, transport == "tls", server)
    engine = running.emulator.services["connectsoft"].engine

    def make_unhealthy() -> None:
        engine.call(
            lambda now: engine.state.set_unhealthy(ENV, "module-reservations-api", "sql", True, now)
        )

    def watch() -> list[str]:
        statuses = []
        with open_channel(running, transport == "tls") as channel:
            stream = channel.unary_stream(
                f"{PREFIX}.RuntimeHealth/StreamHealth",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=protos.HealthUpdate.FromString,
            )(
                protos.StreamHealthRequest(service_id="module-reservations-api"),
                metadata=metadata(token),
                timeout=30,
            )
            statuses.append(next(stream).status)
            trio.from_thread.run_sync(make_unhealthy)
            statuses.append(next(stream).status)
            stream.cancel()
            try:
                next(stream)
            except grpc.RpcError as error:
                statuses.append(error.code().name)  # type: ignore[attr-defined]
        return statuses

    with trio.fail_after(30):
        statuses = await trio.to_thread.run_sync(watch)
        assert statuses == ["Healthy", "Unhealthy", "CANCELLED"]
        # The server noticed the cancellation and closed the stream's subscription.
        await engine.health.wait_open_streams(0)


async def test_stream_health_deadline(start_emulator: Any) -> None:
    running, token = await start(start_emulator, False)
    engine = running.emulator.services["connectsoft"].engine

    def watch() -> list[str]:
        statuses = []
        with open_channel(running, False) as channel:
            stream = channel.unary_stream(
                f"{PREFIX}.RuntimeHealth/StreamHealth",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=protos.HealthUpdate.FromString,
            )(
                protos.StreamHealthRequest(service_id="module-reservations-api"),
                metadata=metadata(token),
                timeout=0.5,
            )
            try:
                for update in stream:
                    statuses.append(update.status)
            except grpc.RpcError as error:
                statuses.append(error.code().name)  # type: ignore[attr-defined]
        return statuses

    with trio.fail_after(30):
        statuses = await trio.to_thread.run_sync(watch)
        assert statuses == ["Healthy", "DEADLINE_EXCEEDED"]
        await engine.health.wait_open_streams(0)
