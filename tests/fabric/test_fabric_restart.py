"""A real Fabric emulator stopped and started again on one `--state-file`: usage, audit and
uploaded assets answer as before, `Last-Event-ID` resumes carry on across the restart with no
duplicate and no gap, a job the restart interrupted ends its stream with `job.failed`, and the
file holds no raw key, JWT or JWT secret."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import jwt
from fabric_server import ACME, FULL_KEY, JWT_SECRET, READ_KEY, SEED
from fabric_support import ALICE

from emulator.embedded import run_in_thread
from emulator.fabric.persistence import RESTARTED

HEADERS = {"X-Principal-Id": ALICE}
# The whole period: a summary's default end is "now", which moves between two runs.
ASSET_BYTES = b"bytes of an asset uploaded before the restart"
PERIOD = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


@attrs.frozen
class Frame:
    id: str
    name: str
    sequence: int
    job_id: str | None
    error: str | None


@attrs.frozen
class Stream:
    frames: list[Frame]
    # True when the server ended the body (a closed job or run stream), False when the test
    # stopped reading.
    ended: bool


def _frames(lines: Iterator[str]) -> Iterator[Frame]:
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            data = json.loads(fields["data"])
            yield Frame(
                fields["id"],
                fields["event"],
                data["sequence"],
                data["job_id"],
                data["payload"].get("error"),
            )
        fields = {}


def _read(
    base: str, path: str, last_id: str | None = None, until: Callable[[Frame], bool] | None = None
) -> Stream:
    """The frames of an SSE stream, up to the first that `until` takes or its end."""
    headers = dict(HEADERS)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    seen: list[Frame] = []
    with httpx.stream("GET", f"{base}{path}", headers=headers, timeout=10.0) as response:
        assert response.status_code == 200
        for frame in _frames(response.iter_lines()):
            seen.append(frame)
            if until is not None and until(frame):
                return Stream(seen, ended=False)
    return Stream(seen, ended=True)


def _settings(tmp_path: Path) -> dict[str, Any]:
    # The embedded emulator restores the state file on start and saves it when it stops.
    return {
        "state_dir": tmp_path,
        "state_file": tmp_path / "fabric-state.json",
        "tls_enabled": False,
        "services": ("fabric",),
    }


def _submit(base: str, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"modality": "text", "input": {"prompt": prompt}, "organization_id": ACME, **extra}
    answer = httpx.post(f"{base}/v1/jobs", json=body, headers=HEADERS)
    assert answer.status_code == 201, answer.text
    job: dict[str, Any] = answer.json()["data"]
    return job


def _ledgers(base: str) -> dict[str, Any]:
    """Everything the usage and audit routes say about Acme, by route."""
    org = f"/v1/organizations/{ACME}"
    paths = [f"{org}/usage", f"{org}/usage/records", f"{org}/audit-logs", "/v1/audit-logs"]
    answers = {}
    for path in paths:
        answer = httpx.get(f"{base}{path}", params=PERIOD, headers=HEADERS)
        assert answer.status_code == 200, answer.text
        answers[path] = answer.json()["data"]
    return answers


def test_usage_audit_and_event_resumes_carry_on_across_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    token = jwt.encode({"sub": ALICE}, JWT_SECRET, algorithm="HS256")
    with run_in_thread(SEED, **settings) as first:
        base = first.url("fabric")
        created = httpx.post(
            f"{base}/v1/api-keys", json={"name": "kept", "organization_id": ACME}, headers=HEADERS
        )
        raw = created.json()["data"]["key"]
        team = httpx.post(
            f"{base}/v1/teams",
            json={"organization_id": ACME, "slug": "jwt-made", "name": "By JWT"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert team.status_code == 201, team.text
        uploaded = httpx.post(
            f"{base}/v1/assets",
            params={"filename": "kept.bin", "organization_id": ACME},
            content=ASSET_BYTES,
            headers={**HEADERS, "Content-Type": "application/octet-stream"},
        )
        assert uploaded.status_code == 201, uploaded.text
        asset_id = uploaded.json()["data"]["id"]
        job = _submit(base, "before")
        before = _read(base, f"/v1/jobs/{job['id']}/events")
        assert before.ended
        assert [f.name for f in before.frames][-1] == "job.completed"
        run_path = f"/v1/workflow-runs/{job['workflow_run_id']}/events"
        run_before = _read(base, run_path)
        ledgers = _ledgers(base)
    assert ledgers[f"/v1/organizations/{ACME}/usage/records"]
    assert len(ledgers["/v1/audit-logs"]) >= 3
    # Nothing secret reached the file: no raw key (seeded or created), no JWT, no JWT secret.
    text = settings["state_file"].read_text()
    for secret in (raw, FULL_KEY, READ_KEY, token, JWT_SECRET):
        assert secret not in text
    # The asset's bytes are beside the file, not in it.
    assert ASSET_BYTES.decode() not in text
    assert (tmp_path / "fabric-state.json.assets" / asset_id).read_bytes() == ASSET_BYTES

    with run_in_thread(SEED, **settings) as second:
        base = second.url("fabric")
        assert _ledgers(base) == ledgers
        download = httpx.get(f"{base}/v1/assets/{asset_id}", headers=HEADERS)
        assert (download.status_code, download.content) == (200, ASSET_BYTES)
        # The job's and run's streams resume right after the event named.
        resumed = _read(base, f"/v1/jobs/{job['id']}/events", before.frames[0].id)
        assert resumed.ended
        assert resumed.frames == before.frames[1:]
        run_resumed = _read(base, run_path, run_before.frames[1].id)
        assert run_resumed.ended
        assert run_resumed.frames == run_before.frames[2:]
        # New events continue the sequence; the all-events stream resumed from before the
        # restart gives every later event once, in order, old and new.
        later = _submit(base, "after")
        after = _read(base, f"/v1/jobs/{later['id']}/events")
        assert after.frames[0].sequence > before.frames[-1].sequence
        everything = _read(
            base,
            "/v1/events/stream?include_internal=true",
            before.frames[0].id,
            until=lambda frame: frame.id == after.frames[-1].id,
        )
    sequences = [frame.sequence for frame in everything.frames]
    start = before.frames[0].sequence + 1
    assert sequences == list(range(start, start + len(sequences)))
    ids = [frame.id for frame in everything.frames]
    assert {f.id for f in before.frames[1:] + after.frames} <= set(ids)
    assert before.frames[0].id not in ids


def test_a_job_the_restart_interrupted_ends_its_stream_with_job_failed(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    seed = copy.deepcopy(SEED)
    # A provider that answers after ten minutes: the job is running when the emulator stops.
    seed["fabric"]["providers"] = [
        {"id": "slow-text", "modalities": ["text"], "models": ["slow-1"], "latency_ms": 600_000}
    ]
    with run_in_thread(seed, **settings) as first:
        base = first.url("fabric")
        job = _submit(base, "interrupted", model="slow-1")
        started = _read(
            base, f"/v1/jobs/{job['id']}/events", until=lambda f: f.name == "job.started"
        )
    assert [f.name for f in started.frames] == ["job.created", "job.started"]

    with run_in_thread(seed, **settings) as second:
        base = second.url("fabric")
        kept = httpx.get(f"{base}/v1/jobs/{job['id']}", headers=HEADERS).json()["data"]
        assert (kept["status"], kept["error"]) == ("failed", RESTARTED)
        # Opened after the restart, the stream replays what happened and closes with the
        # failure; resumed from `job.started`, it gives only the failure.
        replayed = _read(base, f"/v1/jobs/{job['id']}/events")
        assert replayed.ended
        assert replayed.frames[:2] == started.frames
        assert [(f.name, f.error) for f in replayed.frames[2:]] == [("job.failed", RESTARTED)]
        resumed = _read(base, f"/v1/jobs/{job['id']}/events", started.frames[-1].id)
        assert resumed.ended
        assert resumed.frames == replayed.frames[2:]
        run = _read(base, f"/v1/workflow-runs/{job['workflow_run_id']}/events")
        assert run.ended
        assert [(f.name, f.error) for f in run.frames[-2:]] == [
            ("workflow.node.failed", RESTARTED),
            ("workflow.run.failed", RESTARTED),
        ]
