"""The fan-out benchmark's stream reader (benchmarks/sseclient.py) against synthetic streams.

The byte stream is built with Fabric's own frame encoder (`sse_frame` of `serialize.event`,
as `streams.event_frame` writes it) in HTTP/1.1 chunks of several whole frames, and fed to
`StreamTally` cut at many read sizes. Checks: every event is counted once and in order; the
per-read delay bounds and the exact per-event delays match the chosen timestamps and arrival
times; a lost or repeated event breaks the run, and so does a swapped one (inside one read,
in the exact tally only); `count_events` agrees on its numpy and plain paths;
`stamp_seconds` agrees with `parse_stamp`.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.fabric.api import serialize
from emulator.fabric.api.envelope import encode
from emulator.fabric.api.streams import comment_frame, sse_frame
from emulator.fabric.core.events import DomainEvent

# benchmarks/ is not an installed package: import it from the checkout, as its scripts do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import sseclient
from benchmarks.sseclient import StreamTally, count_events, parse_stamp, stamp_seconds

EVENTS = 3000
ORDER = list(range(1, EVENTS + 1))
# Event n is stamped START_US + n * STEP_US microseconds: the run crosses minutes, an hour,
# a day and a year (from 2026-12-31T23:59:30Z, 37.101 ms apart).
START_US = 1_798_761_570 * 1_000_000
STEP_US = 37_101
READ_SIZES = [1, 13, 500, 4096, 70_000, 300_000]
# Frames per chunk, in turn (Fabric writes what one wake-up found, up to 64 frames).
BATCHES = [1, 5, 2, 64, 3, 17]


def stamp(sequence: int) -> float:
    return (START_US + sequence * STEP_US) / 1e6


def arrival(read: int) -> float:
    """When the read numbered `read` (from 0) arrives: 200 s after the first stamp, then 1 ms
    per read."""
    return START_US / 1e6 + 200 + read / 1000


def frame(sequence: int) -> bytes:
    event = DomainEvent(
        id=str(uuid.UUID(int=sequence)),
        sequence=sequence,
        name="job.progress",
        timestamp=stamp(sequence),
        organization_id="org_bench",
        job_id=f"job_{sequence // 7}",
        payload={"step": sequence % 11, "note": 'a,b "c"\nd'},
    )
    return sse_frame(event.name, encode(serialize.event(event)), event.id)


def chunked(sequences: list[int]) -> tuple[bytes, list[int]]:
    """The response body after its head, and where each frame ends (past its blank line)."""
    body, ends = bytearray(), []
    at, turn = 0, 0
    while at < len(sequences):
        frames = [frame(n) for n in sequences[at : at + BATCHES[turn % len(BATCHES)]]]
        at, turn = at + len(frames), turn + 1
        body += b"%x\r\n" % sum(map(len, frames))
        for one in frames:
            body += one
            ends.append(len(body))
        body += b"\r\n"
    return bytes(body + b"0\r\n\r\n"), ends


STREAM, ENDS = chunked(ORDER)


def reads(stream: bytes, size: int) -> Iterator[tuple[bytes, float]]:
    for read, at in enumerate(range(0, len(stream), size)):
        yield stream[at : at + size], arrival(read)


def tally(stream: bytes, size: int, *, exact: bool = False) -> StreamTally:
    result = StreamTally(exact=exact)
    for data, arrived in reads(stream, size):
        result.feed(data, arrived)
    return result


def completed_in(size: int) -> list[int]:
    """The read in which each event of STREAM becomes complete (holds its last byte)."""
    return [(end - 1) // size for end in ENDS]


@pytest.mark.parametrize("size", READ_SIZES)
def test_whole_stream_is_counted_in_order(size: int) -> None:
    result = tally(STREAM, size)
    assert (result.count, result.first, result.last) == (EVENTS, 1, EVENTS)
    assert result.broken is None
    assert result.in_order
    assert not result.overflowed
    # One entry per read that completed events: its arrival minus the stamp of the oldest of
    # them, weighted by how many it completed.
    expected: dict[int, tuple[float, int]] = {}
    for sequence, read in enumerate(completed_in(size), start=1):
        delay, events = expected.get(read, (arrival(read) - stamp(sequence), 0))
        expected[read] = (delay, events + 1)
    assert [events for _, events in result.delays] == [events for _, events in expected.values()]
    assert [delay for delay, _ in result.delays] == pytest.approx(
        [delay for delay, _ in expected.values()], abs=1e-6
    )


@pytest.mark.parametrize("size", [1, 13, 4096, 300_000])
def test_exact_delays_are_per_event(size: int) -> None:
    result = tally(STREAM, size, exact=True)
    expected = [
        arrival(read) - stamp(sequence) for sequence, read in enumerate(completed_in(size), start=1)
    ]
    assert result.exact_delays == pytest.approx(expected, abs=1e-6)
    assert result.count == EVENTS
    assert result.in_order


DAMAGED = {
    "lost": chunked([*ORDER[:1499], *ORDER[1500:]])[0],
    "repeated": chunked([*ORDER[:1500], *ORDER[1499:]])[0],
}
SWAPPED, SWAPPED_ENDS = chunked([*ORDER[:1499], 1501, 1500, *ORDER[1501:]])


@pytest.mark.parametrize("size", READ_SIZES)
@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_lost_or_repeated_event_breaks_the_run(damage: str, size: int) -> None:
    result = tally(DAMAGED[damage], size)
    assert result.broken is not None
    assert not result.in_order


# Read sizes at which one read completes events 1499, 1501, 1500 and 1502 of SWAPPED: the
# swap is then inside the read, whose first and last sequence and count are all as expected,
# so only the exact tally (every event's sequence) sees it.
SWAP_INSIDE = [4096, 70_000, 300_000]


@pytest.mark.parametrize("size", READ_SIZES)
def test_swapped_events_break_the_run(size: int) -> None:
    completed = {(end - 1) // size for end in SWAPPED_ENDS[1497:1501]}
    assert (len(completed) == 1) == (size in SWAP_INSIDE)
    exact = tally(SWAPPED, size, exact=True)
    assert exact.broken is not None
    assert not exact.in_order
    cheap = tally(SWAPPED, size)
    assert (cheap.broken is not None) == (size not in SWAP_INSIDE)


BASE = STREAM[: ENDS[99]]  # the first 100 frames
MIDDLE = ENDS[49]  # where the 51st frame starts: the damage goes there
COUNT_CASES = {
    # (range, span of sequences, `\ndata: ` lines in it)
    # The numpy shortcut's condition holds: four newlines and no carriage return per frame.
    "clean": (BASE, 100, 100),
    # Each of these breaks it, so the numpy path must fall back to counting.
    "carriage return in data": (
        BASE[:MIDDLE] + BASE[MIDDLE:].replace(b'"step"', b'"st\rep"', 1),
        100,
        100,
    ),
    "extra newline in data": (
        BASE[:MIDDLE] + BASE[MIDDLE:].replace(b'"step"', b'"st\nep"', 1),
        100,
        100,
    ),
    "keep-alive comments": (
        BASE[:MIDDLE] + comment_frame("keep-alive") * 2 + BASE[MIDDLE:],
        100,
        100,
    ),
    "a lost event": (BASE[:MIDDLE] + BASE[ENDS[50] :], 100, 99),
}


@pytest.mark.parametrize("case", sorted(COUNT_CASES))
def test_count_events_numpy_and_plain_agree(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    buf, span, frames = COUNT_CASES[case]
    assert buf.count(b"\ndata: ") == frames
    assert (buf.count(b"\n") - buf.count(b"\r") == 4 * span) == (case == "clean")
    # The whole range, and one starting 10 frames in (numpy's view takes an offset).
    ranges = [(0, span, frames), (ENDS[9], span - 10, frames - 10)]
    for start, sequences, expected in ranges:
        assert len(buf) - start >= sseclient.NUMPY_FROM
        assert count_events(buf, start, len(buf), sequences) == expected
    # The same ranges with the numpy threshold out of reach: the plain path.
    monkeypatch.setattr(sseclient, "NUMPY_FROM", len(buf) + 1)
    for start, sequences, expected in ranges:
        assert count_events(buf, start, len(buf), sequences) == expected


@pytest.mark.parametrize(
    ("raw", "epoch"),
    [
        (b"1970-01-01T00:01:00Z", 60.0),
        (b"1970-01-01T00:00:59.999999Z", 59.999999),
        (b"2026-12-31T23:59:59.999999Z", 1_798_761_599.999999),
        (b"2027-01-01T00:00:00.000000Z", 1_798_761_600.0),
        (b"2027-01-01T00:00:00Z", 1_798_761_600.0),
        (b"2028-02-29T12:34:56.5Z", 1_835_440_496.5),
        (b"2026-03-19T12:00:07.123456Z", 1_773_921_607.123456),
    ],
)
def test_stamp_seconds_matches_parse_stamp(raw: bytes, epoch: float) -> None:
    assert parse_stamp(raw) == pytest.approx(epoch, abs=1e-7)
    assert stamp_seconds(raw) == pytest.approx(parse_stamp(raw), abs=1e-7)
    # Again, now that its minute is cached.
    assert stamp_seconds(raw) == pytest.approx(parse_stamp(raw), abs=1e-7)
