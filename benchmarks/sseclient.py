"""A cheap reader of Fabric's server-sent event streams, for the fan-out benchmark.

Owns `StreamTally`: what one subscriber saw, computed per socket read with a handful of
bytes-level searches (C speed) instead of parsing every event in Python, so that a thousand
subscribers in one process cost much less CPU than the server that feeds them. Per read it
counts the complete events (`\\ndata: ` lines), takes the sequence of the first and the last
one (order: the first must follow the previous read's last, and last - first + 1 must equal
the count, so a lost, repeated or reordered event breaks the run of numbers), and the
server timestamp of the first (oldest) event of the read: its delay (arrival minus that
timestamp, same machine clock) is an upper bound for every event in the read and is recorded
with the read's event count as its weight. `exact=True` also parses every event of the read
(for a sample of subscribers: exact per-event delays and sequences).

The stream is HTTP/1.1 chunked; Fabric writes whole frames per chunk, so chunk-size lines
only ever sit between frames and the searches need no de-chunking.
Imports trio and the standard library.
"""

from __future__ import annotations

import datetime
import re
import socket
import time
from collections.abc import Callable

import trio

RECV_SIZE = 256 * 1024
DATA = b"\ndata: "
SEQUENCE = b'"sequence":'
TIMESTAMP = b'"timestamp":"'
OVERFLOW = b"\n: overflow;"
EXACT_STAMP = re.compile(rb'"timestamp":"([^"]+)"')


def parse_stamp(raw: bytes) -> float:
    """An RFC 3339 UTC time with `Z` (as Fabric writes them) as epoch seconds."""
    text = raw.decode("ascii").replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def _sequence_at(buf: bytes, index: int) -> int:
    start = index + len(SEQUENCE)
    end = buf.find(b",", start)
    return int(buf[start:end])


class StreamTally:
    """What one subscriber received; `feed` is called with each read and its arrival time."""

    __slots__ = (
        "broken",
        "count",
        "delays",
        "exact",
        "exact_delays",
        "first",
        "last",
        "leftover",
        "overflowed",
    )

    def __init__(self, *, exact: bool = False) -> None:
        self.exact = exact
        self.leftover = b""
        self.count = 0
        self.first = 0  # sequence of the first event received
        self.last = 0  # sequence of the newest event received
        self.broken: str | None = None  # the first order violation seen
        self.delays: list[tuple[float, int]] = []  # (upper-bound delay, events) per read
        self.exact_delays: list[float] = []
        self.overflowed = False  # the server dropped it (`: overflow; reconnect ...`)

    def feed(self, data: bytes, arrived: float) -> None:
        buf = self.leftover + data if self.leftover else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.leftover = buf
            return
        self.leftover = buf[end + 2 :]
        if buf.find(OVERFLOW, 0, end) >= 0:
            self.overflowed = True
        events = buf.count(DATA, 0, end)
        if not events:
            return  # comments (keep-alive) only
        first_at = buf.find(SEQUENCE, 0, end)
        first = _sequence_at(buf, first_at)
        last = _sequence_at(buf, buf.rfind(SEQUENCE, 0, end))
        if self.broken is None:
            if self.count and first != self.last + 1:
                self.broken = f"after {self.last} came {first}"
            elif last - first + 1 != events:
                self.broken = f"{events} events in a read from {first} to {last}"
        if not self.count:
            self.first = first
        self.count += events
        self.last = last
        stamp_at = buf.find(TIMESTAMP, first_at, end) + len(TIMESTAMP)
        oldest = parse_stamp(buf[stamp_at : buf.find(b'"', stamp_at)])
        self.delays.append((arrived - oldest, events))
        if self.exact:
            for stamp in EXACT_STAMP.findall(buf, 0, end):
                self.exact_delays.append(arrived - parse_stamp(stamp))

    @property
    def in_order(self) -> bool:
        return self.broken is None and (not self.count or self.last - self.first + 1 == self.count)


async def open_stream(
    host: str, port: int, target: str, headers: dict[str, str]
) -> tuple[trio.SocketStream, bytes]:
    """Connect, send the GET and read the response head (which must be 200); returns the
    stream and the bytes that came after the head."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(RECV_SIZE)
        if not data:
            raise ConnectionError("the server closed the stream before its head")
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    if head[9:12] != b"200":
        raise ConnectionError(f"stream refused: {head[:60]!r}")
    return stream, rest


async def follow(
    stream: trio.SocketStream,
    pending: bytes,
    tally: StreamTally,
    after_read: Callable[[], object] = lambda: None,
) -> None:
    """Feed every read to `tally` (then call `after_read`) until the server closes the
    stream or we are cancelled."""
    if pending:
        tally.feed(pending, time.time())
        after_read()
    while True:
        data = await stream.receive_some(RECV_SIZE)
        if not data:
            return
        tally.feed(data, time.time())
        after_read()
