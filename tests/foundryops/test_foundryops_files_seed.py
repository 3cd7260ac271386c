"""File readers and writers (CSV, NDJSON, Parquet) and the `foundryops:` seed block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from emulator.foundryops.core.credits import CreditMode
from emulator.foundryops.core.errors import InvalidRequest
from emulator.foundryops.core.files import (
    ResultWriter,
    count_rows,
    detect_format,
    read_batches,
)
from emulator.foundryops.seed import FoundryOpsSeed
from emulator.platform.seedschema import Node, SeedError

ROWS = [{"company_name": f"Company {n}", "domain": f"c{n}.com"} for n in range(12)]


def write_input(path: Path, fmt: str) -> None:
    if fmt == "csv":
        lines = ["company_name,domain"] + [f"{r['company_name']},{r['domain']}" for r in ROWS]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "ndjson":
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_inputs_are_read_in_batches(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"in.{fmt}"
    write_input(path, fmt)
    assert detect_format(path) == fmt
    assert count_rows(path, fmt) == len(ROWS)
    batches = list(read_batches(path, fmt, batch_rows=5))
    assert [row for batch in batches for row in batch] == ROWS
    if fmt != "csv":  # pyarrow's CSV reader batches by bytes, not rows
        assert [len(b) for b in batches] == [5, 5, 2]


def test_quoted_csv_values_may_hold_line_breaks(tmp_path: Path) -> None:
    """RFC 4180: a quoted field may contain CR, LF and CRLF; such a row is still one row,
    also when it straddles the reader's blocks (the file is several blocks long)."""
    path = tmp_path / "multiline.csv"
    names = [f'Acme "{n}"\nSecond line\r\nThird, with a comma' for n in range(40_000)]
    with path.open("w", newline="") as out:
        out.write("company_name,domain\r\n")
        for n, name in enumerate(names):
            quoted = '"' + name.replace('"', '""') + '"'
            out.write(f"{quoted},c{n}.com\r\n")
    assert path.stat().st_size > 2 * (1 << 20)
    assert count_rows(path, "csv") == len(names)
    rows = [row for batch in read_batches(path, "csv") for row in batch]
    assert [row["company_name"] for row in rows] == names
    assert rows[-1]["domain"] == f"c{len(names) - 1}.com"


def read_all(path: Path) -> None:
    fmt = detect_format(path)
    count_rows(path, fmt)
    list(read_batches(path, fmt))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.csv", b"a,b\n1,2,3\n"),
        ("dup.csv", b"a,a\n1,2\n"),
        ("bad.ndjson", b'{"a": 1}\n{"a": \n'),
        ("list.ndjson", b'{"a": 1}\n[1]\n'),
        ("bad.parquet", b"PAR1 this is not parquet"),
        ("empty.csv", b""),
        ("latin1.csv", b"a\n\xff\xfe\n"),
    ],
)
def test_malformed_files_are_invalid_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidRequest) as caught:
        read_all(path)
    assert caught.value.code == "INVALID_FILE"


RESULT = {
    "input_row": 0, "input_company_name": "Acme", "input_domain": "acme.com",
    "matched": True, "match_row": 3, "match_company_name": "Acme Inc",
    "match_domain": "acme.com", "score": 0.97, "confidence": "high",
    "reasons": "exact_domain;fuzzy_name",
}  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_results_appear_only_when_committed(tmp_path: Path, fmt: str) -> None:
    final = tmp_path / f"out.{fmt}"
    writer = ResultWriter(final, fmt)
    writer.write([RESULT, {**RESULT, "input_row": 1}])
    assert not final.exists()
    writer.commit()
    rows = [row for batch in read_batches(final, fmt) for row in batch]
    assert len(rows) == 2
    assert str(rows[1]["input_row"]) == "1"
    if fmt == "parquet":
        assert rows[0] == RESULT


def test_a_discarded_result_leaves_nothing(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "out.parquet", "parquet")
    writer.write([RESULT])
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def seed(data: Any) -> FoundryOpsSeed:
    return FoundryOpsSeed.from_node(Node(data, "foundryops", "test.yaml"))


def test_the_default_seed_has_the_source_snapshot_and_a_dev_key() -> None:
    default = FoundryOpsSeed.from_node(None)
    assert default.datasets[0].snapshot_id == "dss_snapshot1"
    assert default.api_keys[0].scopes == ("datasets", "jobs", "webhooks")
    assert default.mode is CreditMode.SHADOW
    assert default.allowed_hosts == ("127.0.0.1", "localhost", "::1")
    assert "fo_test_key" not in repr(default)


def test_a_full_seed() -> None:
    parsed = seed(
        {
            "mode": "enforced",
            "prices": {"match_record": 2},
            "tiers": {"tiny": {"requests_per_minute": 6, "burst": 2}},
            "api_keys": [
                {"key": "fo_key_aaaa", "id": "a", "tier": "tiny", "org": "acme"},
                {"key": "fo_key_bbbb", "scopes": ["jobs"]},
            ],
            "credits": [{"org": "acme", "balance": 10}, {"key_id": "key2", "balance": 1}],
            "callbacks": {"secret": "whsec_1", "allowed_hosts": ["*.example.com"]},
            "datasets": [
                {"id": "ds_big", "name": "Big", "generate": 1000, "snapshot_id": "dss_big"},
                {
                    "id": "ds_small",
                    "name": "Small",
                    "schema": {"company_name": "string", "since": "timestamp"},
                    "records": [{"company_name": "Acme", "since": "2024-01-01"}],
                },
            ],
        }
    )
    assert parsed.mode is CreditMode.ENFORCED
    assert parsed.prices.match_record == 2
    assert parsed.tiers["tiny"].burst == 2
    assert parsed.api_keys[1].key_id == "key2"
    assert parsed.datasets[0].generate == 1000
    assert parsed.datasets[1].records == (("Acme", "2024-01-01T00:00:00Z"),)
    assert "whsec_1" not in repr(parsed)


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"api_keys": [{"key": "short"}]}, "foundryops.api_keys[0].key", "at least 8"),
        ({"api_keys": [{"key": "fo_key_aaaa", "tier": "gold"}]}, "foundryops.api_keys[0].tier",
         "must be one of"),
        ({"api_keys": [{"key": "fo_key_aaaa", "scopes": ["admin"]}]},
         "foundryops.api_keys[0].scopes[0]", "must be one of"),
        ({"api_keys": [{"key": "fo_key_aaaa"}, {"key": "fo_key_aaaa"}]},
         "foundryops.api_keys[1]", "duplicate API key"),
        ({"mode": "free"}, "foundryops.mode", "must be one of"),
        ({"colour": 1}, "foundryops.colour", "unknown key"),
        ({"credits": [{"key_id": "nobody", "balance": 1}]}, "foundryops.credits[0].key_id",
         "no API key"),
        ({"datasets": [{"id": "ds_x", "name": "x", "schema": {"a": "varchar"}, "records": []}]},
         "foundryops.datasets[0].schema", "unknown type"),
        ({"datasets": [{"id": "ds_x", "name": "x", "schema": {"a": "int"},
                        "records": [{"a": 1}, {"a": "one"}]}]},
         "foundryops.datasets[0].records[1]", "expected int, got string"),
        ({"datasets": [{"id": "x", "name": "x", "generate": 5}]}, "foundryops.datasets[0].id",
         "starts with 'ds_'"),
        ({"datasets": [{"id": "ds_x", "name": "x", "generate": 5, "records": [{"a": 1}]}]},
         "foundryops.datasets[0]", "not both"),
    ],
)  # fmt: skip
def test_seed_errors_name_the_yaml_path(data: Any, path: str, fragment: str) -> None:
    with pytest.raises(SeedError) as caught:
        seed(data)
    assert caught.value.path == path
    assert fragment in caught.value.message
    assert caught.value.source == "test.yaml"
