"""gRPC framing, status mapping, grpc-message encoding, grpc-timeout and the .proto contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.connectsoft import protos
from emulator.connectsoft.core.errors import (
    ApprovalRequired,
    Conflict,
    DomainError,
    Forbidden,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from emulator.connectsoft.grpcwire import status_for_error
from emulator.web.grpcwire import (
    GrpcError,
    MessageDecoder,
    StatusCode,
    check_request,
    decode_grpc_message,
    encode_grpc_message,
    encode_message,
    parse_timeout,
    trailers,
)

PROTO_DOC = Path(__file__).resolve().parents[2] / "docs" / "connectsoft" / "connectsoft.proto"


def test_frame_layout() -> None:
    assert encode_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 1000])
def test_decoder_any_chunking(chunk: int) -> None:
    payloads = [b"", b"x", b"hello" * 50]
    stream = b"".join(encode_message(p) for p in payloads)
    decoder = MessageDecoder()
    got: list[bytes] = []
    for start in range(0, len(stream), chunk):
        got += decoder.feed(stream[start : start + chunk])
    decoder.finish()
    assert got == payloads


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x01\x00\x00\x00\x01x", StatusCode.UNIMPLEMENTED),
        (b"\x07\x00\x00\x00\x01x", StatusCode.INTERNAL),
        (b"\x00\x00\x00\x04\x01", StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_decoder_refusals(data: bytes, code: StatusCode) -> None:
    with pytest.raises(GrpcError) as caught:
        MessageDecoder(max_message=1024).feed(data)
    assert caught.value.code is code


def test_truncated_body() -> None:
    decoder = MessageDecoder()
    assert decoder.feed(b"\x00\x00\x00\x00\x05ab") == []
    with pytest.raises(GrpcError) as caught:
        decoder.finish()
    assert caught.value.code is StatusCode.INTERNAL


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unauthenticated("Unauthenticated", "m"), StatusCode.UNAUTHENTICATED),
        (Forbidden("TenantMismatch", "m"), StatusCode.PERMISSION_DENIED),
        (ApprovalRequired("ApprovalRequired", "m"), StatusCode.PERMISSION_DENIED),
        (NotFound("EnvironmentNotFound", "m"), StatusCode.NOT_FOUND),
        (InvalidArgument("InvalidRequest", "m"), StatusCode.INVALID_ARGUMENT),
        (Conflict("EnvironmentNotActive", "m"), StatusCode.FAILED_PRECONDITION),
        (DomainError("Odd", "m"), StatusCode.UNKNOWN),
    ],
)
def test_status_for_error(error: DomainError, code: StatusCode) -> None:
    status = status_for_error(error)
    assert status.code is code
    assert status.message == f"{error.code}: m"


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("plain text", "plain text"),
        ("100%", "100%25"),
        ("naïve", "na%C3%AFve"),
        ("line\nbreak", "line%0Abreak"),
    ],
)
def test_grpc_message_encoding(text: str, wire: str) -> None:
    assert encode_grpc_message(text) == wire
    assert decode_grpc_message(wire) == text


def test_malformed_escape_is_kept() -> None:
    assert decode_grpc_message("50%zz") == "50%zz"
    assert decode_grpc_message("end%4") == "end%4"


def test_trailers() -> None:
    assert trailers(StatusCode.OK) == [(b"grpc-status", b"0")]
    assert trailers(StatusCode.NOT_FOUND, "no 100%") == [
        (b"grpc-status", b"5"),
        (b"grpc-message", b"no 100%25"),
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("1S", 1.0),
        ("250m", 0.25),
        ("2M", 120.0),
        ("1H", 3600.0),
        ("100u", 1e-4),
        ("99999999n", 0.099999999),
    ],
)
def test_parse_timeout(value: str | None, seconds: float | None) -> None:
    assert parse_timeout(value) == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize("value", ["", "S", "1", "123456789S", "1s", "-1S", "1.5S", "\u0661S"])
def test_parse_timeout_refuses(value: str) -> None:
    with pytest.raises(GrpcError) as caught:
        parse_timeout(value)
    assert caught.value.code is StatusCode.INVALID_ARGUMENT


def test_check_request() -> None:
    head = [
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"authorization", b"Bearer abc"),
        (b"grpc-timeout", b"5S"),
    ]
    call = check_request("POST", "/x/y", head)
    assert call.authorization == "Bearer abc"
    assert call.timeout == 5.0
    assert check_request("POST", "/x/y", [(b"content-type", b"application/grpc+proto")])


@pytest.mark.parametrize(
    ("method", "head", "code"),
    [
        ("GET", [(b"content-type", b"application/grpc")], StatusCode.UNIMPLEMENTED),
        ("POST", [(b"content-type", b"application/json")], StatusCode.INVALID_ARGUMENT),
        (
            "POST",
            [(b"content-type", b"application/grpc"), (b"grpc-encoding", b"gzip")],
            StatusCode.UNIMPLEMENTED,
        ),
    ],
)
def test_check_request_refuses(
    method: str, head: list[tuple[bytes, bytes]], code: StatusCode
) -> None:
    with pytest.raises(GrpcError) as caught:
        check_request(method, "/x", head)
    assert caught.value.code is code


def test_the_proto_document_matches_the_served_descriptors() -> None:
    assert PROTO_DOC.read_text(encoding="utf-8") == protos.render_proto()


def test_methods_and_messages_round_trip() -> None:
    assert sorted(protos.METHODS) == [
        "/connectsoft.runtime.v1.RuntimeDrift/GetFindings",
        "/connectsoft.runtime.v1.RuntimeHealth/StreamHealth",
        "/connectsoft.runtime.v1.RuntimeInventory/GetServices",
    ]
    assert protos.METHODS["/connectsoft.runtime.v1.RuntimeHealth/StreamHealth"].server_streaming
    update = protos.HealthUpdate(service_id="module-reservations-api", status="Healthy")
    update.checks.add(name="self", status="Healthy")
    update.checks.add(name="sql", status="Healthy", duration_ms=12)
    again = protos.HealthUpdate.FromString(update.SerializeToString())
    assert [c.HasField("duration_ms") for c in again.checks] == [False, True]
    assert again.checks[1].duration_ms == 12
