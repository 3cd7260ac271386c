"""The gRPC contract of ConnectSoft as protobuf descriptors built in code, and its .proto text.

Owns `FILE` (the FileDescriptorProto of `connectsoft/runtime/v1/runtime.proto`: the services
RuntimeInventory, RuntimeHealth and RuntimeDrift and their messages, named after the source),
the message classes made from it by the protobuf library (`GetServicesRequest`, ...), `METHODS`
(the HTTP/2 path of each RPC with its request class and whether it streams) and `render_proto`,
which prints the descriptor as .proto text. docs/connectsoft/connectsoft.proto is that text and a
test keeps the two identical, so the documentation cannot drift from what is served.

Why descriptors in code and not generated *_pb2 modules: no protoc or grpcio-tools at build
time, and no generated code in the repository that nobody wrote. Imports protobuf only.
"""

from __future__ import annotations

from typing import Any

import attrs
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PACKAGE = "connectsoft.runtime.v1"
FILE_NAME = "connectsoft/runtime/v1/runtime.proto"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "int32": _F.TYPE_INT32, "bool": _F.TYPE_BOOL}

# message name -> fields as (label, type, name, number); label is "", "repeated" or "optional".
_MESSAGES: list[tuple[str, list[tuple[str, str, str, int]]]] = [
    (
        "GetServicesRequest",
        [("", "string", "environment_id", 1), ("", "string", "tenant_id", 2)],
    ),
    (
        "ScalingPolicy",
        [
            ("", "string", "scaling_policy_id", 1),
            ("", "string", "metric", 2),
            ("", "int32", "min_replicas", 3),
            ("", "int32", "max_replicas", 4),
            ("", "int32", "target_utilization_percent", 5),
            ("", "bool", "scale_to_zero", 6),
        ],
    ),
    (
        "RuntimeService",
        [
            ("", "string", "service_id", 1),
            ("", "string", "environment_id", 2),
            ("", "string", "target", 3),
            ("", "string", "image", 4),
            ("", "string", "version", 5),
            ("", "int32", "replicas", 6),
            ("", "string", "configuration_id", 7),
            ("", "string", "health_status", 8),
            ("", "ScalingPolicy", "scaling", 9),
        ],
    ),
    (
        "GetServicesResponse",
        [
            ("", "string", "environment_id", 1),
            ("", "string", "tenant_id", 2),
            ("", "string", "status", 3),
            ("repeated", "RuntimeService", "services", 4),
        ],
    ),
    (
        "StreamHealthRequest",
        [("", "string", "service_id", 1), ("", "string", "environment_id", 2)],
    ),
    (
        "HealthCheck",
        [
            ("", "string", "name", 1),
            ("", "string", "status", 2),
            ("optional", "int32", "duration_ms", 3),
        ],
    ),
    (
        "HealthUpdate",
        [
            ("", "string", "service_id", 1),
            ("", "string", "environment_id", 2),
            ("", "string", "status", 3),
            ("repeated", "HealthCheck", "checks", 4),
            ("", "string", "evaluated_at", 5),
        ],
    ),
    ("GetFindingsRequest", [("", "string", "environment_id", 1)]),
    (
        "DriftFinding",
        [
            ("", "string", "finding_id", 1),
            ("", "string", "service_id", 2),
            ("", "string", "kind", 3),
            ("", "string", "desired", 4),
            ("", "string", "actual", 5),
            ("", "string", "severity", 6),
            ("", "string", "detected_at", 7),
        ],
    ),
    (
        "GetFindingsResponse",
        [("", "string", "environment_id", 1), ("repeated", "DriftFinding", "findings", 2)],
    ),
]

# service -> (method, request, response, server streaming)
_SERVICES: list[tuple[str, list[tuple[str, str, str, bool]]]] = [
    ("RuntimeInventory", [("GetServices", "GetServicesRequest", "GetServicesResponse", False)]),
    ("RuntimeHealth", [("StreamHealth", "StreamHealthRequest", "HealthUpdate", True)]),
    ("RuntimeDrift", [("GetFindings", "GetFindingsRequest", "GetFindingsResponse", False)]),
]


def _build() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES:
        message = file.message_type.add(name=name)
        for label, kind, field_name, number in fields:
            field = message.field.add(name=field_name, number=number)
            field.json_name = _camel(field_name)
            field.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            if label == "optional":
                # proto3 `optional`: a synthetic oneof so presence is tracked.
                field.proto3_optional = True
                field.oneof_index = len(message.oneof_decl)
                message.oneof_decl.add(name=f"_{field_name}")
    for service_name, methods in _SERVICES:
        service = file.service.add(name=service_name)
        for method_name, request, response, streaming in methods:
            service.method.add(
                name=method_name,
                input_type=f".{PACKAGE}.{request}",
                output_type=f".{PACKAGE}.{response}",
                server_streaming=streaming,
            )
    return file


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


FILE = _build()
# A pool of our own, so the emulator never collides with a client's generated modules.
POOL = descriptor_pool.DescriptorPool()
POOL.Add(FILE)


def message_class(name: str) -> type[Message]:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


# Typed as Any: the classes are made at run time, so their fields are unknown to mypy.
GetServicesRequest: Any = message_class("GetServicesRequest")
GetServicesResponse: Any = message_class("GetServicesResponse")
RuntimeServiceMessage: Any = message_class("RuntimeService")
ScalingPolicyMessage: Any = message_class("ScalingPolicy")
StreamHealthRequest: Any = message_class("StreamHealthRequest")
HealthUpdate: Any = message_class("HealthUpdate")
HealthCheckMessage: Any = message_class("HealthCheck")
GetFindingsRequest: Any = message_class("GetFindingsRequest")
GetFindingsResponse: Any = message_class("GetFindingsResponse")
DriftFindingMessage: Any = message_class("DriftFinding")


@attrs.frozen
class Method:
    path: str
    request: type[Message]
    response: type[Message]
    server_streaming: bool


METHODS: dict[str, Method] = {
    f"/{PACKAGE}.{service}/{name}": Method(
        f"/{PACKAGE}.{service}/{name}",
        message_class(request),
        message_class(response),
        streaming,
    )
    for service, methods in _SERVICES
    for name, request, response, streaming in methods
}


def render_proto() -> str:
    """The descriptor as .proto source (what docs/connectsoft/connectsoft.proto holds)."""
    lines = [
        "// The ConnectSoft runtime platform's gRPC services, as the emulator serves them.",
        "// Generated from emulator/connectsoft/protos.py by render_proto(); a test keeps",
        "// this file and the served descriptors identical.",
        'syntax = "proto3";',
        "",
        f"package {PACKAGE};",
    ]
    for service in FILE.service:
        lines += ["", f"service {service.name} {{"]
        for method in service.method:
            stream = "stream " if method.server_streaming else ""
            lines.append(
                f"  rpc {method.name}({_short(method.input_type)}) "
                f"returns ({stream}{_short(method.output_type)});"
            )
        lines.append("}")
    for message in FILE.message_type:
        lines += ["", f"message {message.name} {{"]
        for field in message.field:
            lines.append(f"  {_label(field)}{_type_name(field)} {field.name} = {field.number};")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _short(type_name: str) -> str:
    return type_name.removeprefix(f".{PACKAGE}.")


def _label(field: Any) -> str:
    if field.label == _F.LABEL_REPEATED:
        return "repeated "
    return "optional " if field.proto3_optional else ""


def _type_name(field: Any) -> str:
    if field.type == _F.TYPE_MESSAGE:
        return _short(field.type_name)
    return {value: key for key, value in _SCALARS.items()}[field.type]
