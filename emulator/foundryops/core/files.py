"""Reading input files and writing result files in batches: CSV, NDJSON and Parquet.

Owns `detect_format` (Parquet by its `PAR1` magic, NDJSON when the first byte is `{`, else
CSV), `count_rows`, `read_batches` (an iterator of lists of row dicts, never the whole file in
memory: pyarrow's streaming CSV reader with every column as text, line-by-line JSON, and
Parquet row groups via `iter_batches`) and `ResultWriter` (results to a temporary file renamed
into place only when complete, so a failed job leaves nothing half-written). A malformed file
raises INVALID_FILE with the row or line. Synchronous (callers run it in worker threads);
imports pyarrow, nothing from trio, quart or yaml.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from .errors import InvalidRequest

FORMATS = ("csv", "ndjson", "parquet")
BATCH_ROWS = 5000
# Result rows written at a time (a Parquet row group).
ROW_GROUP_ROWS = 20_000


def invalid_file(message: str, **details: Any) -> InvalidRequest:
    return InvalidRequest("INVALID_FILE", message, details)


def detect_format(path: Path) -> str:
    with path.open("rb") as stream:
        head = stream.read(4)
        if head == b"PAR1":
            return "parquet"
        stream.seek(0)
        start = stream.read(4096).lstrip()
    if not start:
        raise invalid_file("The file is empty.")
    if start.startswith(b"{"):
        return "ndjson"
    return "csv"


def _csv_header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", errors="strict", newline="") as stream:
        try:
            header = next(csv.reader(stream))
        except StopIteration:
            raise invalid_file("The CSV file has no header row.") from None
        except (csv.Error, UnicodeDecodeError) as error:
            raise invalid_file(f"The CSV header cannot be read: {error}", line=1) from None
    names = [name.strip() for name in header]
    if not names or any(not name for name in names) or len(set(names)) != len(names):
        raise invalid_file(
            "The CSV header must name every column once (no empty or repeated names).", line=1
        )
    return names


def _csv_reader(path: Path) -> pacsv.CSVStreamingReader:
    names = _csv_header(path)
    try:
        return pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            # RFC 4180 lets a quoted value hold line breaks; the reader then finds row ends by
            # following the quotes, still block by block (bounded memory).
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise invalid_file(f"The CSV file cannot be read: {error}") from None


def read_batches(
    path: Path, fmt: str, batch_rows: int = BATCH_ROWS
) -> Iterator[list[dict[str, Any]]]:
    """Rows as dicts, `batch_rows` (or one CSV block) at a time."""
    if fmt == "parquet":
        try:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=batch_rows):
                yield batch.to_pylist()
        except (pa.ArrowInvalid, OSError) as error:
            raise invalid_file(f"The Parquet file cannot be read: {error}") from None
        return
    if fmt == "csv":
        reader = _csv_reader(path)
        try:
            for batch in reader:
                yield batch.to_pylist()
        except (pa.ArrowInvalid, UnicodeDecodeError) as error:
            raise invalid_file(f"The CSV file is malformed: {error}") from None
        return
    if fmt == "ndjson":
        with path.open("rb") as stream:
            rows: list[dict[str, Any]] = []
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    raise invalid_file(f"Line {number} is not valid JSON.", line=number) from None
                if not isinstance(row, dict):
                    raise invalid_file(f"Line {number} is not a JSON object.", line=number)
                rows.append(row)
                if len(rows) >= batch_rows:
                    yield rows
                    rows = []
            if rows:
                yield rows
        return
    raise invalid_file(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")


def read_columns(
    path: Path, fmt: str, fields: tuple[str, ...], batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """(rows, {field: values}) per batch, for those of `fields` the batch has: the columns a
    file job needs, without a dict per row (CSV and Parquet batches are columnar already)."""
    if fmt == "ndjson":
        for rows in read_batches(path, fmt, batch_rows):
            present = {field for row in rows for field in row}
            yield (
                len(rows),
                {f: [row.get(f) for row in rows] for f in fields if f in present},
            )
        return
    if fmt not in ("csv", "parquet"):
        raise invalid_file(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    try:
        if fmt == "parquet":
            batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        else:
            batches = _csv_reader(path)
        for batch in batches:
            names = batch.schema.names
            yield (
                batch.num_rows,
                {f: batch.column(names.index(f)).to_pylist() for f in fields if f in names},
            )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
        kind = "Parquet file cannot be read" if fmt == "parquet" else "CSV file is malformed"
        raise invalid_file(f"The {kind}: {error}") from None


def count_rows(path: Path, fmt: str) -> int:
    """Rows in the file, read in the same streaming way (Parquet: from its metadata)."""
    if fmt == "parquet":
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowInvalid, OSError) as error:
            raise invalid_file(f"The Parquet file cannot be read: {error}") from None
    if fmt == "ndjson":
        with path.open("rb") as stream:
            return sum(1 for line in stream if line.strip())
    reader = _csv_reader(path)
    try:
        return sum(batch.num_rows for batch in reader)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise invalid_file(f"The CSV file is malformed: {error}") from None


# The flat result row of a file job (the emulator's shape; docs/foundryops/shapes.md).
RESULT_SCHEMA = pa.schema(
    [
        ("input_row", pa.int64()),
        ("input_company_name", pa.string()),
        ("input_domain", pa.string()),
        ("matched", pa.bool_()),
        ("match_row", pa.int64()),
        ("match_company_name", pa.string()),
        ("match_domain", pa.string()),
        ("score", pa.float64()),
        ("confidence", pa.string()),
        ("reasons", pa.string()),
    ]
)
CONTENT_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
}


@attrs.define
class ResultWriter:
    """Writes result rows to `final_path` via a temporary file; `commit` renames it."""

    final_path: Path
    fmt: str
    _temp: Path = attrs.field(init=False)
    _parquet: pq.ParquetWriter | None = attrs.field(init=False, default=None)
    _csv: pacsv.CSVWriter | None = attrs.field(init=False, default=None)
    _text: io.BufferedWriter | None = attrs.field(init=False, default=None)
    rows: int = attrs.field(init=False, default=0)
    # Arrow batches of `write_columns` not yet written.
    _pending: list[Any] = attrs.field(init=False, factory=list)
    _pending_rows: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise invalid_file(f"Unknown output_format {self.fmt!r}.")
        self._temp = self.final_path.with_name(self.final_path.name + ".part")
        if self.fmt == "parquet":
            self._parquet = pq.ParquetWriter(self._temp, RESULT_SCHEMA)
        elif self.fmt == "csv":
            self._csv = pacsv.CSVWriter(str(self._temp), RESULT_SCHEMA)
        else:
            self._text = self._temp.open("wb")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._text is not None:
            self._text.write(
                b"".join(json.dumps(row, separators=(",", ":")).encode() + b"\n" for row in rows)
            )
        else:
            self._flush()  # rows keep their order
            table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
            if self._parquet is not None:
                self._parquet.write_table(table)
            elif self._csv is not None:
                self._csv.write_table(table)
        self.rows += len(rows)

    def write_columns(self, columns: dict[str, list[Any]]) -> None:
        """Result rows given as one list per RESULT_SCHEMA column. Parquet and CSV rows become
        an Arrow batch now (a short hold of the GIL for a small part) and are written once
        ROW_GROUP_ROWS are pending (a row group of the Parquet file)."""
        if self._text is not None:
            names = list(columns)
            rows = zip(*columns.values(), strict=True)
            self.write([dict(zip(names, values, strict=True)) for values in rows])
            return
        batch = pa.RecordBatch.from_pydict(columns, schema=RESULT_SCHEMA)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=RESULT_SCHEMA)
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.write_table(table)
        self.rows += self._pending_rows
        self._pending, self._pending_rows = [], 0

    def _close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        if self._text is not None:
            self._text.close()

    def commit(self) -> Path:
        self._flush()
        self._close()
        self._temp.replace(self.final_path)
        return self.final_path

    def discard(self) -> None:
        try:
            self._close()
        finally:
            self._temp.unlink(missing_ok=True)
