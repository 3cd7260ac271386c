"""Datasets ("Labs"), their immutable snapshots, appends with DQ summaries, and activation.

Owns `Dataset`, `Snapshot` (`dss_...`, immutable: rows are shared segments, an append adds a
segment to a new snapshot and never changes an old one), `AppendReport` (accepted, rejected,
coercions per type, null_pct per field, the rejects artifact) and `DatasetStore`, the table of
datasets and snapshots with `create`, `append`, `activate` and lookups that raise
DATASET_NOT_FOUND / SNAPSHOT_NOT_FOUND. Validate first, mutate second: a failed call changes
nothing. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from .artifacts import Artifact, ArtifactStore, rejects_ndjson_gz
from .errors import InvalidRequest, NotFound, PayloadTooLarge, invalid_schema
from .ids import IdFactory
from .schema import Rejection, RowCheck, Schema

MAX_APPEND_RECORDS = 10_000
MAX_NAME_LENGTH = 200

Row = tuple[object, ...]


def iso(moment: float) -> str:
    """Epoch seconds as the source's `2024-01-15T10:00:00Z`."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen(eq=False)
class Snapshot:
    """An immutable view of a dataset's rows at one append."""

    snapshot_id: str
    dataset_id: str
    schema: Schema
    created_at: float
    # Row segments shared with the parent snapshot; rows are tuples in schema order.
    segments: tuple[Sequence[Row], ...]
    parent_id: str | None

    @property
    def record_count(self) -> int:
        return sum(len(segment) for segment in self.segments)

    def rows(self) -> Iterator[Row]:
        for segment in self.segments:
            yield from segment

    def record(self, row: Row) -> dict[str, object]:
        return dict(zip(self.schema.names, row, strict=True))


@attrs.define
class Dataset:
    dataset_id: str
    name: str
    schema: Schema
    created_at: float
    owner_key: str
    snapshot_ids: list[str] = attrs.field(factory=list)
    active_snapshot_id: str | None = None


@attrs.frozen
class AppendReport:
    snapshot_id: str
    accepted: int
    rejected: int
    coercions: dict[str, int]
    null_pct: dict[str, float]
    rejects_artifact_id: str | None


@attrs.frozen
class CheckedRows:
    """The outcome of checking rows, before anything is stored."""

    rows: tuple[Row, ...]
    rejected: tuple[tuple[int, object, tuple[Rejection, ...]], ...]
    check: RowCheck


def check_rows(schema: Schema, records: Sequence[object]) -> CheckedRows:
    check = RowCheck(schema)
    rows: list[Row] = []
    rejected: list[tuple[int, object, tuple[Rejection, ...]]] = []
    for index, record in enumerate(records):
        values, reasons = check.check(record)
        if values is None:
            rejected.append((index, record, reasons))
        else:
            rows.append(values)
    return CheckedRows(tuple(rows), tuple(rejected), check)


@attrs.define
class DatasetStore:
    ids: IdFactory
    artifacts: ArtifactStore
    datasets: dict[str, Dataset] = attrs.field(factory=dict)
    snapshots: dict[str, Snapshot] = attrs.field(factory=dict)

    # Lookups -------------------------------------------------------------------------------

    def get(self, dataset_id: str) -> Dataset:
        dataset = self.datasets.get(dataset_id)
        if dataset is None:
            raise NotFound(
                "DATASET_NOT_FOUND",
                f"Dataset '{dataset_id}' does not exist.",
                {"dataset_id": dataset_id},
            )
        return dataset

    def snapshot(self, snapshot_id: str) -> Snapshot:
        snapshot = self.snapshots.get(snapshot_id)
        if snapshot is None:
            raise NotFound(
                "SNAPSHOT_NOT_FOUND",
                f"Snapshot '{snapshot_id}' does not exist.",
                {"snapshot_id": snapshot_id},
            )
        return snapshot

    def active_snapshot(self, dataset_id: str) -> Snapshot:
        dataset = self.get(dataset_id)
        if dataset.active_snapshot_id is None:
            raise NotFound(
                "SNAPSHOT_NOT_FOUND",
                f"Dataset '{dataset_id}' has no active snapshot.",
                {"dataset_id": dataset_id},
            )
        return self.snapshot(dataset.active_snapshot_id)

    # Mutations -----------------------------------------------------------------------------

    def create(
        self,
        name: object,
        schema: object,
        owner_key: str,
        now: float,
        *,
        dataset_id: str | None = None,
    ) -> Dataset:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise InvalidRequest(
                "INVALID_REQUEST",
                f"name is required: a non-empty string of at most {MAX_NAME_LENGTH} characters.",
                {"field": "name"},
            )
        parsed = Schema.from_json(schema)
        if dataset_id is not None and dataset_id in self.datasets:
            raise InvalidRequest(
                "INVALID_REQUEST",
                f"Dataset '{dataset_id}' already exists.",
                {"dataset_id": dataset_id},
            )
        dataset = Dataset(
            dataset_id=dataset_id or self.ids.new("ds"),
            name=name.strip(),
            schema=parsed,
            created_at=now,
            owner_key=owner_key,
        )
        self.datasets[dataset.dataset_id] = dataset
        return dataset

    def append(
        self,
        dataset_id: str,
        records: object,
        now: float,
        *,
        strict: bool = False,
        snapshot_id: str | None = None,
        limit: int = MAX_APPEND_RECORDS,
    ) -> AppendReport:
        """Check every record, then make a new snapshot of the old rows plus the accepted ones.

        Rejected rows are reported and written to a gzipped NDJSON artifact. The append fails
        with INVALID_SCHEMA (and stores nothing) when no row is accepted, or on the first
        rejected row when `strict` is set."""
        dataset = self.get(dataset_id)
        rows = self.records_of(records, limit)
        checked = check_rows(dataset.schema, rows)
        return self.commit(dataset, checked, now, strict=strict, snapshot_id=snapshot_id)

    @staticmethod
    def records_of(records: object, limit: int = MAX_APPEND_RECORDS) -> list[object]:
        """The `records` of an append request: a non-empty list of at most `limit` items."""
        if not isinstance(records, list) or not records:
            raise InvalidRequest(
                "INVALID_REQUEST",
                "records must be a non-empty array of objects.",
                {"field": "records"},
            )
        if len(records) > limit:
            raise PayloadTooLarge(
                "PAYLOAD_TOO_LARGE",
                f"An append takes at most {limit} records; this one has {len(records)}. "
                "Upload a file (purpose=dataset) for more.",
                {"limit": limit, "received": len(records)},
            )
        return records

    def commit(
        self,
        dataset: Dataset,
        checked: CheckedRows,
        now: float,
        *,
        strict: bool = False,
        snapshot_id: str | None = None,
    ) -> AppendReport:
        """Store checked rows as a new snapshot (also used by file appends)."""
        if checked.rejected and (strict or not checked.rows):
            index, _, reasons = checked.rejected[0]
            first = reasons[0]
            error = invalid_schema(first.field, first.expected, first.received, first.message)
            error.details["row"] = index
            error.details["rejected"] = len(checked.rejected)
            raise error
        if snapshot_id is not None and snapshot_id in self.snapshots:
            raise InvalidRequest(
                "INVALID_REQUEST",
                f"Snapshot '{snapshot_id}' already exists.",
                {"snapshot_id": snapshot_id},
            )
        parent = self.snapshots[dataset.snapshot_ids[-1]] if dataset.snapshot_ids else None
        segments = (parent.segments if parent else ()) + (checked.rows,)
        snapshot = Snapshot(
            snapshot_id=snapshot_id or self.ids.new("dss"),
            dataset_id=dataset.dataset_id,
            schema=dataset.schema,
            created_at=now,
            segments=segments,
            parent_id=parent.snapshot_id if parent else None,
        )
        artifact_id = None
        if checked.rejected:
            artifact_id = self.ids.new("art")
            self.artifacts.add(
                Artifact(
                    artifact_id=artifact_id,
                    kind="rejects",
                    content_type="application/gzip",
                    filename=f"{snapshot.snapshot_id}-rejects.ndjson.gz",
                    created_at=now,
                    expires_at=now + self.artifacts.retention_seconds,
                    data=rejects_ndjson_gz(checked.rejected),
                )
            )
        self.snapshots[snapshot.snapshot_id] = snapshot
        dataset.snapshot_ids.append(snapshot.snapshot_id)
        return AppendReport(
            snapshot_id=snapshot.snapshot_id,
            accepted=checked.check.accepted,
            rejected=checked.check.rejected,
            coercions=dict(checked.check.coercions),
            null_pct=checked.check.null_pct(),
            rejects_artifact_id=artifact_id,
        )

    def activate(self, dataset_id: str, snapshot_id: object) -> Dataset:
        dataset = self.get(dataset_id)
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise InvalidRequest(
                "INVALID_REQUEST", "snapshot_id is required.", {"field": "snapshot_id"}
            )
        snapshot = self.snapshot(snapshot_id)
        if snapshot.dataset_id != dataset_id:
            raise InvalidRequest(
                "INVALID_REQUEST",
                f"Snapshot '{snapshot_id}' belongs to another dataset.",
                {"snapshot_id": snapshot_id, "dataset_id": dataset_id},
            )
        dataset.active_snapshot_id = snapshot_id
        return dataset


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    return {
        "dataset_id": dataset.dataset_id,
        "name": dataset.name,
        "snapshots": len(dataset.snapshot_ids),
        "active_snapshot_id": dataset.active_snapshot_id,
    }
