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
from .files import ResultWriter, read_columns
from .matcher import Match, MatchIndex, MatchOptions
from .normalize import DOMAIN_FIELDS, EMAIL_FIELDS, NAME_FIELDS, key_of

# Progress is reported at least this often (rows), so a job's progress moves several times a
# second even on a slow machine (the matcher does well over 5,000 rows a second).
REPORT_EVERY = 1000
YIELD_EVERY = 100
# Rows whose candidates are found with one search of the index (see `candidates_many`). Small
# enough that a chunk's objects die young: with 1,000 rows they outlived the young generations
# and set off ~800 collections and 6 full ones per 200,000 rows (each a GIL hold of 20-50 ms);
# with 200 rows, 9 collections and no full one, at the same rows per CPU second.
CANDIDATE_CHUNK = 200


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


@attrs.frozen
class FileOutcome:
    rows: int
    matched: int
    path: Path


class Stopped(FoundryOpsError):
    """The engine asked the file job to stop (shutdown or reset)."""


def _pick(columns: list[list[Any]], count: int, *, strip: bool) -> list[str | None]:
    """Per row, the first value of `columns` that is a non-empty string (with `strip`: one
    with more than white space, as `normalize.match_key` picks a record's fields)."""
    if not columns:
        return [None] * count
    if len(columns) == 1:
        if strip:
            return [v if isinstance(v, str) and v.strip() else None for v in columns[0]]
        return [v if isinstance(v, str) and v else None for v in columns[0]]
    return [
        next((v for v in values if isinstance(v, str) and (v.strip() if strip else v)), None)
        for values in zip(*columns, strict=True)
    ]


def _field_positions(snapshot: Snapshot, fields: tuple[str, ...]) -> list[int]:
    names = snapshot.schema.names
    return [names.index(field) for field in fields if field in names]


def _first_of(row: Sequence[object], positions: list[int]) -> str | None:
    for position in positions:
        value = row[position]
        if isinstance(value, str) and value:
            return value
    return None


def rows_of(snapshot: Snapshot) -> Callable[[int], Sequence[object]]:
    """Row number -> the stored row (a tuple in schema order)."""
    segments = snapshot.segments
    if len(segments) == 1:
        return segments[0].__getitem__
    record_at = records_of(snapshot)
    names = snapshot.schema.names

    def row(number: int) -> Sequence[object]:
        record = record_at(number)
        return tuple(record[name] for name in names)

    return row


_WANTED = (*NAME_FIELDS, *DOMAIN_FIELDS, *EMAIL_FIELDS)


def _empty_results(first_row: int, size: int) -> dict[str, list[Any]]:
    """Result columns (docs/foundryops/shapes.md) for `size` unmatched rows."""
    return {
        "input_row": list(range(first_row, first_row + size)),
        "input_company_name": [None] * size,
        "input_domain": [None] * size,
        "matched": [False] * size,
        "match_row": [None] * size,
        "match_company_name": [None] * size,
        "match_domain": [None] * size,
        "score": [None] * size,
        "confidence": [None] * size,
        "reasons": [None] * size,
    }


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
    """Match every row of `source`; the result file appears at `output` only when complete.

    The name, domain and e-mail columns are read as columns; a chunk of CANDIDATE_CHUNK rows
    at a time is normalised, has its candidates found with one search of the index, is
    matched and becomes result columns, so no row becomes a dict on the way."""
    row_at = rows_of(snapshot)
    name_at = _field_positions(snapshot, NAME_FIELDS)
    domain_at = _field_positions(snapshot, DOMAIN_FIELDS)
    # A file result keeps only the best match of each row (with its reasons).
    options = attrs.evolve(options, top_n=1, return_explanations=True)
    writer = ResultWriter(output, output_format)
    processed = matched = 0
    try:
        for count, columns in read_columns(source, source_format, _WANTED):
            if should_stop():
                raise Stopped("JOB_STOPPED", "The emulator stopped the job.")
            groups = (
                [columns[f] for f in NAME_FIELDS if f in columns],
                [columns[f] for f in DOMAIN_FIELDS if f in columns],
                [columns[f] for f in EMAIL_FIELDS if f in columns],
            )
            # A chunk at a time, so no step holds the GIL long (the event loop's thread
            # needs it to answer requests while the job runs).
            for start in range(0, count, CANDIDATE_CHUNK):
                size = min(CANDIDATE_CHUNK, count - start)
                names, domains, emails = (
                    [column[start : start + size] for column in group] for group in groups
                )
                keys = [
                    key_of(name, domain, email)
                    for name, domain, email in zip(
                        _pick(names, size, strip=True),
                        _pick(domains, size, strip=True),
                        _pick(emails, size, strip=True),
                        strict=True,
                    )
                ]
                out = _empty_results(processed, size)
                out["input_company_name"] = _pick(names, size, strip=False)
                out["input_domain"] = _pick(domains, size, strip=False)
                for position, (key, candidates) in enumerate(
                    zip(keys, index.candidates_many(keys), strict=True)
                ):
                    # No candidate, no match (a row with neither name nor domain has none).
                    found = index.match_normalised(key, options, candidates) if candidates else []
                    if found:
                        best = found[0]
                        target = row_at(best.row)
                        matched += 1
                        out["matched"][position] = True
                        out["match_row"][position] = best.row
                        out["match_company_name"][position] = _first_of(target, name_at)
                        out["match_domain"][position] = _first_of(target, domain_at)
                        out["score"][position] = best.score
                        out["confidence"][position] = best.confidence
                        out["reasons"][position] = ";".join(r.code for r in best.reasons) or None
                    processed += 1
                    if processed % REPORT_EVERY == 0:
                        report(processed)
                    if processed % YIELD_EVERY == 0:
                        # Hand the GIL to the event loop's thread now rather than at the end of
                        # the interpreter's 5 ms switch interval, so requests keep their latency.
                        time.sleep(0)
                writer.write_columns(out)
            report(processed)
        path = writer.commit()
    except BaseException:
        writer.discard()
        raise
    return FileOutcome(processed, matched, path)
