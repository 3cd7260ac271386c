"""The frame meter every HTTP/2 server of the emulator puts in front of its protocol code (its
own, and Hypercorn's through the compatibility patch): it walks the 9-byte frame headers of
each read without parsing payloads, cuts the read into batches of frames so one connection
cannot keep the others waiting, and judges the bounds a hostile client could break (`Abuse`):

- a frame longer than `MAX_FRAME_SIZE` (judged at its header, before any of it is buffered);
- a header block (HEADERS plus CONTINUATION) of more bytes than the limit it is given, each
  frame counting `HEADER_FRAME_COST` besides its payload, so a block of empty frames is bound;
- more than `CONTROL_FRAMES_PER_SECOND` cheap frames a second: PING, SETTINGS, PRIORITY, empty
  DATA, WINDOW_UPDATE beyond two per DATA frame the server sent, and RST_STREAM counting
  `RESET_WEIGHT` each (HTTP/2 rapid reset, CVE-2023-44487).
"""

from __future__ import annotations

import attrs

from .h2wire import (
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
)

# The largest frame a client may send (the protocol's default SETTINGS_MAX_FRAME_SIZE, which
# the server does not raise).
MAX_FRAME_SIZE = DEFAULT_FRAME_SIZE
# Frames handed on per scheduler pass; other connections run between batches (16 against
# 64: under rapid reset a well-behaved client's p99 went from about 170 ms to about 50 ms).
BATCH_FRAMES = 16
# Cheap frames (see the module docstring) one connection may send per second.
CONTROL_FRAMES_PER_SECOND = 1000
# What a frame of a header block counts for besides its payload (about what a protocol holds
# per frame until the block ends): the bound on a header block is in bytes, so a legal block
# may have many CONTINUATION frames, and a block of empty frames is still bound.
HEADER_FRAME_COST = 256
CHEAP_FRAMES = frozenset((PRIORITY, SETTINGS, PING))
# A RST_STREAM usually ends a stream whose head the server decoded (rapid reset): it counts
# as this many cheap frames, so a connection may reset at most 200 streams a second.
RESET_WEIGHT = 5


class Abuse(Exception):
    """The client broke a bound: the connection ends with this code."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@attrs.define
class FrameMeter:
    """Walks the frame headers in what a client sends, without parsing payloads: where the
    batches of `BATCH_FRAMES` frames begin, and whether a bound is broken (`Abuse`)."""

    header_limit: int
    # Bytes to pass before the next frame header (the connection preface at first).
    skip: int = len(PREFACE)
    # The first bytes of a frame header split between two reads.
    partial: bytes = b""
    window_start: float = -1.0
    # Cheap frames counted in the current one-second window.
    cheap: int = 0
    # WINDOW_UPDATEs the server's own DATA frames have earned (two each).
    credit: int = 0
    # Bytes of the header block being received (HEADERS, then CONTINUATION frames).
    header_block: int = 0

    def scan(self, data: bytes | bytearray, now: float) -> list[int]:
        """Offsets in `data` where a new batch begins (none for a single batch)."""
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.cheap = 0
        size = len(data)
        base = 0
        if self.partial:
            base = len(self.partial)
            data = self.partial + data
            self.partial = b""
        position = self.skip
        end = base + size
        cuts: list[int] = []
        frames = 0
        cheap = self.cheap
        while position + 9 <= end:
            length = (data[position] << 16) | (data[position + 1] << 8) | data[position + 2]
            kind = data[position + 3]
            flags = data[position + 4]
            if length > MAX_FRAME_SIZE:
                raise Abuse(ErrorCode.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if kind == DATA:
                if not flags & END_STREAM and (
                    length == 0
                    or (flags & PADDED and position + 9 < end and data[position + 9] + 1 >= length)
                ):
                    cheap += 1
            elif kind in CHEAP_FRAMES:
                cheap += 1
            elif kind == RST_STREAM:
                cheap += RESET_WEIGHT
            elif kind == WINDOW_UPDATE:
                if self.credit:
                    self.credit -= 1
                else:
                    cheap += 1
            elif kind in (HEADERS, CONTINUATION):
                # Each frame costs its bytes plus what is kept per frame until the block ends.
                cost = length + HEADER_FRAME_COST
                self.header_block = cost if kind == HEADERS else self.header_block + cost
                if self.header_block > self.header_limit:
                    raise Abuse(
                        ErrorCode.PROTOCOL_ERROR,
                        f"a header block of more than {self.header_limit} bytes",
                    )
                if flags & END_HEADERS:
                    self.header_block = 0
            if cheap > CONTROL_FRAMES_PER_SECOND:
                # Judged at the frame that breaks the bound: a flood's read (up to 1 MiB, some
                # 75,000 frames) is not walked to its end first.
                self.cheap = cheap
                raise Abuse(
                    ErrorCode.ENHANCE_YOUR_CALM,
                    f"more than {CONTROL_FRAMES_PER_SECOND} cheap frames",
                )
            frames += 1
            if frames > BATCH_FRAMES and position > base:
                cuts.append(position - base)
                frames = 1
            position += 9 + length
        self.cheap = cheap
        if position > end:
            self.skip = position - end
        else:
            self.skip = 0
            self.partial = bytes(data[position:end])
        return cuts
