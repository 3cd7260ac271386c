"""What makes an HTTP/2 request header block (or its trailers) malformed: RFC 9113, sections
8.2 and 8.3.

Owns one check per block, in a single pass over the decoded fields. The server asks the h2
library not to validate inbound headers: its chain of generators cost about a tenth of the
server's CPU a request, and it treats a malformed request as a connection error, where RFC
9113 section 8.1.1 asks for a stream error (the server resets just that stream with
PROTOCOL_ERROR and keeps the connection).

Beyond h2's own checks, control bytes in a field value are refused as on HTTP/1.1 (RFC 9110
section 5.5), `:protocol` is refused (the server does not offer extended CONNECT), and a
request without `:authority` and `Host` is accepted, as RFC 9113 section 8.3.1 allows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Fields with no meaning in HTTP/2 (RFC 9113, section 8.2.2); `te` may only say "trailers".
CONNECTION_FIELDS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
# A field name is lower-case token characters (RFC 9113 section 8.2.1, RFC 9110 section 5.1).
_BAD_NAME = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]").search
# A value holds no control byte but HTAB, and neither starts nor ends with SP or HTAB.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_SPACE = frozenset(b" \t")


def _bad_value(value: bytes) -> bool:
    return bool(value) and (
        value[0] in _SPACE or value[-1] in _SPACE or _CONTROL(value) is not None
    )


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why one regular (not pseudo) field is malformed, or None."""
    if not name or _BAD_NAME(name):
        return f"illegal field name {name[:64]!r}"
    if _bad_value(value):
        return f"illegal value in field {name[:64]!r}"
    if name in CONNECTION_FIELDS:
        return f"connection-specific field {name!r}"
    if name == b"te" and value.lower() != b"trailers":
        return "te other than trailers"
    return None


def request_problem(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request header block is malformed, or None when it is well formed."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    host: bytes | None = None
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name[:64]!r} after a regular field"
            if name not in REQUEST_PSEUDO:
                return f"pseudo-header {name[:64]!r} not allowed in a request"
            if name in pseudo:
                return f"duplicate pseudo-header {name!r}"
            if _bad_value(value):
                return f"illegal value in pseudo-header {name!r}"
            pseudo[name] = value
            continue
        regular = True
        problem = field_problem(name, value)
        if problem is not None:
            return problem
        if name == b"host":
            if host is not None:
                return "more than one host field"
            host = value
    method = pseudo.get(b":method")
    if not method:
        return "no :method"
    if method == b"CONNECT":
        if b":scheme" in pseudo or b":path" in pseudo:
            return "CONNECT with :scheme or :path"
        if b":authority" not in pseudo:
            return "CONNECT without :authority"
    else:
        if not pseudo.get(b":scheme"):
            return "no :scheme"
        if not pseudo.get(b":path"):
            return "no :path, or an empty one"
    authority = pseudo.get(b":authority")
    if authority is not None and host is not None and authority != host:
        return ":authority and host differ"
    return None


def trailers_problem(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a trailer block is malformed (it may hold no pseudo-header), or None."""
    for name, value in fields:
        if name[:1] == b":":
            return f"pseudo-header {name[:64]!r} in trailers"
        problem = field_problem(name, value)
        if problem is not None:
            return problem
    return None
