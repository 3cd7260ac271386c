"""Fabric's error family: every error, wherever it is raised, answered in the envelope.

Owns `EnvelopeFamily`, the `ErrorFamily` of Fabric's listener. Errors the route wrapper
(`routes.py`) answers carry the caller's context; errors raised outside it (unknown routes,
wrong methods, bodies over the transport's limits, the WebSocket blueprint) are answered here
with an anonymous context and a fresh request id, which `decorate` also sends as
`X-Request-Id`. Domain errors are translated by the same `error_answer` the wrapper uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...platform.clock import Clock
from ...platform.errors import ApiError, ErrorFamily
from .envelope import VERSION, error_answer, framework_code, rfc3339

REQUEST_ID_HEADER = "X-Request-Id"


class EnvelopeFamily(ErrorFamily):
    """One per running Fabric service, with its clock and id factory."""

    def __init__(self, name: str, clock: Clock, new_id: Callable[[], str]) -> None:
        super().__init__(name)
        self.clock = clock
        self.new_id = new_id

    def decorate(self, error: ApiError) -> None:
        error.headers.setdefault(REQUEST_ID_HEADER, self.new_id())

    def body(self, error: ApiError) -> Any:
        request_id = error.headers.get(REQUEST_ID_HEADER) or self.new_id()
        problem: dict[str, Any] = {"code": error.code, "message": error.description}
        if error.parameters:
            problem["details"] = dict(error.parameters)
        return {
            "meta": {
                "request_id": request_id,
                "trace_id": self.new_id(),
                "timestamp": rfc3339(self.clock.now()),
                "status": error.status,
                "version": VERSION,
            },
            "context": {"principal_id": None, "organization_id": None, "team_id": None},
            "data": None,
            "error": problem,
            "links": {},
        }

    def framework_code(self, status: int) -> str:
        return framework_code(status)

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["meta", "context", "data", "error", "links"],
            "properties": {
                "meta": {"type": "object"},
                "context": {"type": "object"},
                "data": {},
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "links": {"type": "object"},
            },
        }

    def translate(self, error: Exception) -> ApiError | None:
        if isinstance(error, ApiError):
            return None
        answer = error_answer(error)
        if answer is None:
            return None
        return self.error(
            answer.status,
            answer.code,
            answer.message,
            parameters=answer.details,
            headers=answer.headers,
        )
