"""Jobs over real HTTP: batch results, signed callbacks to a local receiver (with retries), a
100,000-row file job, a failed file job, and progress while a job runs."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import h11
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import trio
from foundryops_support import client, seed_with

from emulator.foundryops.core.generate import company_rows
from emulator.foundryops.core.webhooks import verify_signature

SECRET = "whsec_test_secret_1"


@attrs.define
class Receiver:
    """A local HTTP receiver: answers with `statuses` in turn (then 200), keeps each request."""

    statuses: list[int]
    received: list[tuple[dict[str, str], bytes]] = attrs.field(factory=list)
    arrived: trio.Event = attrs.field(factory=trio.Event)
    url: str = ""

    async def handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append((headers, body))
        data = connection.send(h11.Response(status_code=status, headers=[("content-length", "0")]))
        await stream.send_all((data or b"") + (connection.send(h11.EndOfMessage()) or b""))
        await stream.aclose()
        if status == 200:
            self.arrived.set()


async def start_receiver(nursery: trio.Nursery, statuses: list[int]) -> Receiver:
    receiver = Receiver(statuses)
    listeners = await nursery.start(partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hooks/match"
    return receiver


async def test_batch_results_and_a_signed_callback_after_a_retry(
    start_emulator: Any, nursery: trio.Nursery
) -> None:
    running = await start_emulator(
        seed_with(callbacks={"secret": SECRET}), services=("foundryops",)
    )
    instance = running.emulator.services["foundryops"]
    instance.engine.retry_base = 0.01
    receiver = await start_receiver(nursery, [500])
    async with client(running) as http:
        submitted = await http.post(
            "/api/v2/match/batch",
            json={
                "snapshot_id": "dss_snapshot1",
                "records": [
                    {"company_name": "Acme Inc", "domain": "acme.com"},
                    {"company_name": "Globex Corp", "domain": "globex.com"},
                    {"company_name": "Nobody At All"},
                ],
                "options": {"profile": "balanced", "threshold": 0.7},
                "callback_url": receiver.url,
            },
        )
        job_id = submitted.json()["job_id"]
        await receiver.arrived.wait()
        status = (await http.get(f"/api/v2/jobs/{job_id}")).json()
        page = (await http.get(f"/api/v2/jobs/{job_id}/results?limit=2")).json()
        rest = (await http.get(f"/api/v2/jobs/{job_id}/results?offset=2")).json()
    assert len(receiver.received) == 2  # one 500, then the delivery that succeeded
    headers, body = receiver.received[-1]
    assert verify_signature(SECRET, body, headers["x-foundryops-signature"])
    assert headers["x-foundryops-delivery"].startswith("dlv_")
    assert receiver.received[0][0]["x-foundryops-delivery"] == headers["x-foundryops-delivery"]
    payload = json.loads(body)
    assert payload["event"] == "job.completed"
    assert payload["job"]["job_id"] == job_id
    assert SECRET not in body.decode()
    assert status["status"] == "completed"
    assert status["progress"] == {"processed": 3, "total": 3, "percentage": 100.0}
    assert status["matched"] == 2
    assert [r["index"] for r in page["results"]] == [0, 1]
    assert page["next_offset"] == 2
    assert page["results"][0]["matches"][0]["record"]["domain"] == "acme.com"
    assert rest["results"][0]["matched"] is False
    assert rest["next_offset"] is None
    delivery = await instance.engine.wait_delivery_finished(job_id)
    assert (delivery.status.value, delivery.attempts) == ("delivered", 2)


def write_leads(path: Path, count: int) -> None:
    with path.open("w") as out:
        out.write("company_name,domain\n")
        for number, (name, domain, _) in enumerate(company_rows(count, seed=14)):
            if number % 10 == 0:
                domain = ""  # some leads come without a domain
            out.write(f"{name},{domain}\n")


async def upload(http: Any, path: Path, purpose: str = "match") -> str:
    presigned = (await http.post(f"/api/v2/uploads/presign?purpose={purpose}")).json()
    async with await trio.open_file(path, "rb") as source:
        data = await source.read()
    put = await http.put(presigned["upload_url"], content=data)
    assert put.status_code == 200
    return str(presigned["storage_key"])


async def test_a_100k_row_file_job_streams_to_parquet(start_emulator: Any, tmp_path: Path) -> None:
    seed = seed_with(
        datasets=[
            {"id": "ds_accounts", "name": "Accounts", "snapshot_id": "dss_accounts",
             "generate": 50_000, "generate_seed": 14},
        ]
    )  # fmt: skip
    running = await start_emulator(seed, services=("foundryops",))
    instance = running.emulator.services["foundryops"]
    leads = tmp_path / "leads.csv"
    await trio.to_thread.run_sync(write_leads, leads, 100_000)
    async with client(running) as http:
        source_key = await upload(http, leads)
        submitted = await http.post(
            "/api/v2/match/files",
            json={"snapshot_id": "dss_accounts", "source_key": source_key,
                  "output_format": "parquet", "options": {"profile": "balanced"}},
        )  # fmt: skip
        job_id = submitted.json()["job_id"]
        # The loop stays free while the job runs: health answers between progress updates.
        seen: list[int] = []
        while not (job := instance.ops.state.jobs.get(job_id)).status.finished:
            health = await http.get("/_emulate/health")
            assert health.status_code == 200
            seen.append(job.processed)
            with trio.move_on_after(0.2):
                await instance.engine.wait_job_finished(job_id)
        status = (await http.get(f"/api/v2/jobs/{job_id}")).json()
        results = await http.get(f"/api/v2/jobs/{job_id}/results")
    assert status["status"] == "completed", status
    assert status["progress"]["total"] == 100_000
    assert status["progress"]["percentage"] == 100.0
    assert seen == sorted(seen)
    out = tmp_path / "results.parquet"
    out.write_bytes(results.content)
    table = pq.read_table(out)
    assert table.num_rows == 100_000
    rows = table.slice(0, 50_000).to_pylist()
    # The first 50,000 leads are the snapshot's own rows: each finds itself.
    assert all(r["matched"] and r["match_row"] == r["input_row"] for r in rows[1:50_000:97])
    assert results.headers["content-type"] == "application/vnd.apache.parquet"


async def test_a_malformed_file_fails_the_job_and_leaves_nothing(fo: Any, tmp_path: Path) -> None:
    instance = fo.emulator.services["foundryops"]
    bad = tmp_path / "bad.csv"
    bad.write_text("company_name,domain\nAcme,acme.com\nBroken,row,extra\n")
    async with client(fo) as http:
        source_key = await upload(http, bad)
        submitted = await http.post(
            "/api/v2/match/files",
            json={"snapshot_id": "dss_snapshot1", "source_key": source_key,
                  "output_format": "csv"},
        )  # fmt: skip
        job_id = submitted.json()["job_id"]
        await instance.engine.wait_job_finished(job_id)
        status = (await http.get(f"/api/v2/jobs/{job_id}")).json()
        results = await http.get(f"/api/v2/jobs/{job_id}/results")
    assert status["status"] == "failed"
    assert status["error"]["code"] == "INVALID_FILE"
    assert results.status_code == 409
    assert results.json()["error"]["code"] == "JOB_NOT_COMPLETED"
    leftovers = [p.name for p in instance.workdir.iterdir() if not p.name.endswith(".upload")]
    assert leftovers == []


async def test_a_dataset_append_from_an_uploaded_file(fo: Any, tmp_path: Path) -> None:
    data = tmp_path / "accounts.ndjson"
    data.write_text(
        '{"company_name": "Acme", "domain": "acme.com"}\n{"company_name": 5, "domain": null}\n'
        '{"company_name": ["bad"]}\n'
    )
    async with client(fo) as http:
        created = await http.post(
            "/api/v2/datasets",
            json={"name": "Accounts", "schema": {"company_name": "string", "domain": "string"}},
        )
        source_key = await upload(http, data, purpose="dataset")
        appended = await http.post(
            f"/api/v2/datasets/{created.json()['dataset_id']}/append",
            json={"source_key": source_key},
        )
    report = appended.json()
    assert (report["accepted"], report["rejected"]) == (2, 1)
    assert report["coercions"] == {"string": 1}
    assert report["null_pct"]["domain"] == 50.0


async def test_parquet_in_csv_out_and_ndjson_out(fo: Any, tmp_path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]

    instance = fo.emulator.services["foundryops"]
    source = tmp_path / "leads.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"company_name": "Globex Corporation", "website": "https://www.globex.com/x"},
             {"company_name": "Unknown Things", "website": None}]
        ),
        source,
    )  # fmt: skip
    outputs = {}
    async with client(fo) as http:
        for fmt in ("csv", "ndjson"):
            source_key = await upload(http, source)
            submitted = await http.post(
                "/api/v2/match/files",
                json={"snapshot_id": "dss_snapshot1", "source_key": source_key,
                      "output_format": fmt},
            )  # fmt: skip
            job_id = submitted.json()["job_id"]
            await instance.engine.wait_job_finished(job_id)
            outputs[fmt] = await http.get(f"/api/v2/jobs/{job_id}/results")
    csv_lines = outputs["csv"].text.splitlines()
    assert outputs["csv"].headers["content-type"] == "text/csv"
    assert csv_lines[0].startswith('"input_row","input_company_name"')
    assert len(csv_lines) == 3
    rows = [json.loads(line) for line in outputs["ndjson"].text.splitlines()]
    assert rows[0]["match_domain"] == "globex.com"
    assert "domain_from_url" in rows[0]["reasons"]
    assert rows[1]["matched"] is False
