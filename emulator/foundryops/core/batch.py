"""Matching many records: a batch kept in memory and a file streamed to a result file.

Owns `match_json` / `batch_results` (the JSON result of a batch job, one entry per input
record) and `match_file` (reads the input file in batches, matches every row against an index,
writes the flat result rows with `ResultWriter`, reports progress after every batch and stops
between batches when told to). Synchronous: the engine runs these in worker threads. Imports
nothing from trio, quart or yaml.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from .datasets import Snapshot
from .errors import FoundryOpsError, InvalidRequest
from .files import ResultWriter, read_batches
from .matcher import Match, MatchIndex, MatchOptions
from .normalize import DOMAIN_FIELDS, NAME_FIELDS

# Progress is reported at least this often (rows), so a job's progress moves several times a
# second even on a slow machine (the matcher does well over 5,000 rows a second).
REPORT_EVERY = 1000
YIELD_EVERY = 100


def match_json(match: Match, record: dict[str, object], explain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "row": match.row,
        "record": record,
        "score": match.score,
        "confidence": match.confidence,
    }
    if explain:
        out["reasons"] = [reason.to_json() for reason in match.reasons]
    return out


def records_of(snapshot: Snapshot) -> Callable[[int], dict[str, object]]:
    """Row number -> record dict, without copying the snapshot's rows."""
    offsets: list[tuple[int, Sequence[tuple[object, ...]]]] = []
    start = 0
    for segment in snapshot.segments:
        offsets.append((start, segment))
        start += len(segment)

    def record(row: int) -> dict[str, object]:
        for first, segment in reversed(offsets):
            if row >= first:
                return snapshot.record(segment[row - first])
        raise IndexError(row)

    return record


def batch_results(
    snapshot: Snapshot,
    index: MatchIndex,
    records: Sequence[dict[str, object]],
    options: MatchOptions,
) -> tuple[list[dict[str, Any]], int]:
    """One result per input record (in input order) and how many records matched."""
    record_at = records_of(snapshot)
    results: list[dict[str, Any]] = []
    matched = 0
    for position, record in enumerate(records):
        try:
            matches = index.match(record, options)
            error = None
        except InvalidRequest as problem:
            matches, error = [], {"code": problem.code, "message": problem.message}
        if matches:
            matched += 1
        entry: dict[str, Any] = {
            "index": position,
            "input": record,
            "matched": bool(matches),
            "matches": [
                match_json(m, record_at(m.row), options.return_explanations) for m in matches
            ],
        }
        if error is not None:
            entry["error"] = error
        results.append(entry)
    return results, matched


def _first(record: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for field in fields:
        value = record.get(field)
        if isinstance(value, str) and value:
            return value
    return None


@attrs.frozen
class FileOutcome:
    rows: int
    matched: int
    path: Path


class Stopped(FoundryOpsError):
    """The engine asked the file job to stop (shutdown or reset)."""


def match_file(
    source: Path,
    source_format: str,
    snapshot: Snapshot,
    index: MatchIndex,
    options: MatchOptions,
    output: Path,
    output_format: str,
    report: Callable[[int], None],
    should_stop: Callable[[], bool],
) -> FileOutcome:
    """Match every row of `source`; the result file appears at `output` only when complete."""
    record_at = records_of(snapshot)
    # A file result keeps only the best match of each row (with its reasons).
    options = attrs.evolve(options, top_n=1, return_explanations=True)
    writer = ResultWriter(output, output_format)
    processed = matched = 0
    try:
        for batch in read_batches(source, source_format):
            if should_stop():
                raise Stopped("JOB_STOPPED", "The emulator stopped the job.")
            out: list[dict[str, Any]] = []
            for record in batch:
                try:
                    found = index.match(record, options)
                except InvalidRequest:
                    found = []
                row: dict[str, Any] = {
                    "input_row": processed,
                    "input_company_name": _first(record, NAME_FIELDS),
                    "input_domain": _first(record, DOMAIN_FIELDS),
                    "matched": bool(found),
                    "match_row": None,
                    "match_company_name": None,
                    "match_domain": None,
                    "score": None,
                    "confidence": None,
                    "reasons": None,
                }
                if found:
                    best = found[0]
                    target = record_at(best.row)
                    matched += 1
                    row.update(
                        match_row=best.row,
                        match_company_name=_first(target, NAME_FIELDS),
                        match_domain=_first(target, DOMAIN_FIELDS),
                        score=best.score,
                        confidence=best.confidence,
                        reasons=";".join(r.code for r in best.reasons) or None,
                    )
                out.append(row)
                processed += 1
                if processed % REPORT_EVERY == 0:
                    report(processed)
                if processed % YIELD_EVERY == 0:
                    # Hand the GIL to the event loop's thread now rather than at the end of the
                    # interpreter's 5 ms switch interval, so requests keep their latency.
                    time.sleep(0)
            writer.write(out)
            report(processed)
        path = writer.commit()
    except BaseException:
        writer.discard()
        raise
    return FileOutcome(processed, matched, path)
