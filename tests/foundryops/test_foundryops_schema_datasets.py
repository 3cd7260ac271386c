"""Schemas, coercion, appends, snapshots, activation and reject artifacts (sync, table-driven)."""

from __future__ import annotations

import gzip
import json

import pytest

from emulator.foundryops.core.artifacts import ArtifactStore
from emulator.foundryops.core.datasets import DatasetStore
from emulator.foundryops.core.errors import (
    Gone,
    InvalidRequest,
    InvalidSchema,
    NotFound,
    PayloadTooLarge,
)
from emulator.foundryops.core.ids import SequentialIds
from emulator.foundryops.core.schema import CoercionError, FieldType, Schema, coerce

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("kind", "value", "stored", "coerced"),
    [
        (FieldType.STRING, "Acme", "Acme", False),
        (FieldType.STRING, 12, "12", True),
        (FieldType.STRING, True, "true", True),
        (FieldType.INT, 7, 7, False),
        (FieldType.INT, "42", 42, True),
        (FieldType.INT, 3.0, 3, True),
        (FieldType.FLOAT, 2, 2.0, False),
        (FieldType.FLOAT, "2.5", 2.5, True),
        (FieldType.BOOL, False, False, False),
        (FieldType.BOOL, "Yes", True, True),
        (FieldType.BOOL, 0, False, True),
        (FieldType.TIMESTAMP, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", True),
        (FieldType.TIMESTAMP, "2024-01-01T02:00:00+02:00", "2024-01-01T00:00:00Z", True),
        (FieldType.TIMESTAMP, "2024-01-01", "2024-01-01T00:00:00Z", True),
        (FieldType.TIMESTAMP, 0, "1970-01-01T00:00:00Z", True),
        (FieldType.INT, None, None, False),
    ],
)
def test_coercion_table(kind: FieldType, value: object, stored: object, coerced: bool) -> None:
    assert coerce("f", kind, value) == (stored, coerced)


@pytest.mark.parametrize(
    ("kind", "value", "received"),
    [
        (FieldType.INT, "abc", "string"),
        (FieldType.INT, True, "bool"),
        (FieldType.INT, 2.5, "float"),
        (FieldType.FLOAT, "nan", "string"),
        (FieldType.BOOL, "maybe", "string"),
        (FieldType.TIMESTAMP, "yesterday", "string"),
        (FieldType.STRING, {"a": 1}, "object"),
        (FieldType.STRING, [1], "array"),
    ],
)
def test_rejections_say_field_expected_received(
    kind: FieldType, value: object, received: str
) -> None:
    with pytest.raises(CoercionError) as caught:
        coerce("customer_id", kind, value)
    rejection = caught.value.rejection
    assert (rejection.field, rejection.expected, rejection.received) == (
        "customer_id",
        kind.value,
        received,
    )
    assert rejection.message == f"Field 'customer_id' expected {kind.value}, got {received}"


@pytest.mark.parametrize(
    ("schema", "field", "received"),
    [
        ({"a": "varchar"}, "a", "varchar"),
        ({"a": 5}, "a", "int"),
        ({}, "schema", "object"),
        ([], "schema", "array"),
        ({"bad name": "string"}, "bad name", "string"),
    ],
)
def test_invalid_schemas(schema: object, field: str, received: str) -> None:
    with pytest.raises(InvalidSchema) as caught:
        Schema.from_json(schema)
    assert caught.value.code == "INVALID_SCHEMA"
    assert caught.value.details["field"] == field
    assert caught.value.details["received"] == received


def store() -> DatasetStore:
    return DatasetStore(SequentialIds(), ArtifactStore())


SOURCE_SCHEMA = {
    "customer_id": "int",
    "company_name": "string",
    "email": "string",
    "created_at": "timestamp",
}


def test_the_source_append_example_gives_its_dq_summary() -> None:
    datasets = store()
    dataset = datasets.create("Customer Master Data", SOURCE_SCHEMA, "dev", NOW)
    report = datasets.append(
        dataset.dataset_id,
        [
            {"customer_id": 1, "company_name": "Acme", "email": "info@acme.com",
             "created_at": "2024-01-01T00:00:00Z"},
            {"customer_id": 2, "company_name": "Globex", "email": "info@globex.com",
             "created_at": "2024-01-02T00:00:00Z"},
        ],
        NOW,
    )  # fmt: skip
    assert report.snapshot_id.startswith("dss_")
    assert (report.accepted, report.rejected) == (2, 0)
    assert report.coercions == {"timestamp": 2}
    assert report.null_pct["email"] == 0.0
    assert report.rejects_artifact_id is None


def test_rejected_rows_are_counted_and_written_to_a_gzipped_ndjson_artifact() -> None:
    datasets = store()
    dataset = datasets.create("d", SOURCE_SCHEMA, "dev", NOW)
    report = datasets.append(
        dataset.dataset_id,
        [
            {"customer_id": "7", "company_name": "Acme", "email": None},
            {"customer_id": "x", "company_name": "Bad"},
            {"customer_id": 3, "company_name": "Extra", "unknown": 1},
            "not an object",
        ],
        NOW,
    )
    assert (report.accepted, report.rejected) == (1, 3)
    assert report.coercions == {"int": 1}
    assert report.null_pct == {
        "customer_id": 0.0, "company_name": 0.0, "email": 100.0, "created_at": 100.0,
    }  # fmt: skip
    assert report.rejects_artifact_id is not None
    artifact = datasets.artifacts.get(report.rejects_artifact_id, NOW)
    assert artifact.data is not None
    lines = [json.loads(line) for line in gzip.decompress(artifact.data).splitlines()]
    assert [line["row"] for line in lines] == [1, 2, 3]
    assert lines[0]["reasons"][0] == {
        "field": "customer_id",
        "expected": "int",
        "received": "string",
        "message": "Field 'customer_id' expected int, got string",
    }
    assert lines[1]["reasons"][0]["field"] == "unknown"
    # Artifacts are kept 24 hours on the injected clock.
    assert datasets.artifacts.get(report.rejects_artifact_id, NOW + 24 * 3600 - 1)
    with pytest.raises(Gone):
        datasets.artifacts.get(report.rejects_artifact_id, NOW + 24 * 3600)
    datasets.artifacts.sweep(NOW + 24 * 3600)
    with pytest.raises(Gone):
        datasets.artifacts.get(report.rejects_artifact_id, NOW)


def test_snapshots_are_immutable_and_each_append_makes_one() -> None:
    datasets = store()
    dataset = datasets.create("d", {"company_name": "string"}, "dev", NOW)
    first = datasets.append(dataset.dataset_id, [{"company_name": "A"}], NOW)
    second = datasets.append(dataset.dataset_id, [{"company_name": "B"}], NOW + 1)
    assert first.snapshot_id != second.snapshot_id
    assert [r for r in datasets.snapshot(first.snapshot_id).rows()] == [("A",)]
    assert [r for r in datasets.snapshot(second.snapshot_id).rows()] == [("A",), ("B",)]
    assert datasets.get(dataset.dataset_id).active_snapshot_id is None
    datasets.activate(dataset.dataset_id, first.snapshot_id)
    assert datasets.active_snapshot(dataset.dataset_id).snapshot_id == first.snapshot_id


@pytest.mark.parametrize(
    ("records", "strict", "error", "code"),
    [
        ([{"n": "x"}], False, InvalidSchema, "INVALID_SCHEMA"),  # nothing accepted
        ([{"n": 1}, {"n": "x"}], True, InvalidSchema, "INVALID_SCHEMA"),
        ([], False, InvalidRequest, "INVALID_REQUEST"),
        ("nope", False, InvalidRequest, "INVALID_REQUEST"),
        ([{"n": 1}] * 10_001, False, PayloadTooLarge, "PAYLOAD_TOO_LARGE"),
    ],
)
def test_failed_appends_change_nothing(
    records: object, strict: bool, error: type[Exception], code: str
) -> None:
    datasets = store()
    dataset = datasets.create("d", {"n": "int"}, "dev", NOW)
    with pytest.raises(error) as caught:
        datasets.append(dataset.dataset_id, records, NOW, strict=strict)
    assert getattr(caught.value, "code", None) == code
    assert dataset.snapshot_ids == []
    assert datasets.snapshots == {}
    assert datasets.artifacts.artifacts == {}


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda d: d.get("ds_missing"), "DATASET_NOT_FOUND"),
        (lambda d: d.append("ds_missing", [{"n": 1}], NOW), "DATASET_NOT_FOUND"),
        (lambda d: d.snapshot("dss_missing"), "SNAPSHOT_NOT_FOUND"),
        (lambda d: d.activate("ds_000001", "dss_missing"), "SNAPSHOT_NOT_FOUND"),
    ],
)
def test_lookups_name_what_is_missing(call: object, code: str) -> None:
    datasets = store()
    datasets.create("d", {"n": "int"}, "dev", NOW)
    with pytest.raises(NotFound) as caught:
        call(datasets)  # type: ignore[operator]
    assert caught.value.code == code
