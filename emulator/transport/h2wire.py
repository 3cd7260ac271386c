"""The vocabulary of HTTP/2 on the wire (RFC 9113): frame types and flags, error codes,
settings, the connection preface, and how a frame is packed.

Owned here so that the codec (h2codec), the frame meter (h2meter) and the server (h2) name
the same things the same way; nothing here does any work.
"""

from __future__ import annotations

import enum
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

# Frame flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings (RFC 9113, section 6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

# The protocol's defaults and bounds.
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
LARGEST_FRAME_SIZE = 2**24 - 1
LARGEST_WINDOW = 2**31 - 1

# A frame header: 24-bit length and 8-bit type packed as one word, flags, stream id.
FRAME_HEAD = struct.Struct(">IBI")
WORD = struct.Struct(">I")


class ErrorCode(enum.IntEnum):
    """Why a stream or a connection ends (RFC 9113, section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    return FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload
