"""The running FoundryOps service: `FoundryOpsInstance` holds the state and the engine and gives
the platform the raw routes of every area, the banner, reset and describe. Every route is a raw
ASGI route in the FoundryOps error family; this module only wires areas together.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from ..platform.errors import ErrorFamily
from ..platform.service import ServiceContext, ServiceInstance
from ..web.rawasgi import RawRoute
from . import persistence
from .api import datasets, jobs, match, observability, uploads
from .api.common import Ops
from .api.errors import FOUNDRYOPS, PREFIXES
from .api.metrics import Metrics
from .artifactdir import ArtifactDir
from .core.access import ApiKey, KeyRing
from .core.artifacts import Artifact, ArtifactStore
from .core.credits import Account, Ledger
from .core.datasets import CheckedRows, DatasetStore
from .core.ids import RandomIds
from .core.schema import RowCheck
from .core.state import OpsState
from .core.uploads import Presigner, UploadTable
from .engine import Engine
from .seed import FoundryOpsSeed


class FoundryOpsInstance(ServiceInstance):
    default_family: ErrorFamily = FOUNDRYOPS
    secret_names = frozenset({"signature"})

    def __init__(self, seed: FoundryOpsSeed, context: ServiceContext) -> None:
        self.seed = seed
        self.context = context
        self.ids = RandomIds(context.clock.now)
        context.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="foundryops-", dir=context.settings.state_dir))
        # Where `--state-file` keeps artifact files (None: no state file, artifacts not kept).
        state_file = context.settings.state_file
        self.artifact_dir = ArtifactDir.beside(state_file) if state_file is not None else None
        self.metrics = Metrics()
        state = self._build_state()
        self.engine = Engine(
            state=state,
            clock=context.clock,
            ids=self.ids,
            workdir=self.workdir,
            callback_secret=seed.callback_secret,
            allowed_hosts=seed.allowed_hosts,
        )
        self.ops = Ops(
            state=state,
            engine=self.engine,
            clock=context.clock,
            ids=self.ids,
            seed=seed,
            metrics=self.metrics,
            base_url=self._base_url,
        )

    def _base_url(self) -> str:
        endpoints = self.context.endpoints
        return (endpoints.base_url or endpoints.http_url or endpoints.https_url or "").rstrip("/")

    def _build_state(self) -> OpsState:
        seed = self.seed
        now = self.context.clock.now()
        artifacts = ArtifactStore()
        store = DatasetStore(self.ids, artifacts)
        ledger = Ledger(seed.prices, seed.mode, seed.default_balance)
        for credit in seed.credits:
            ledger.accounts[credit.account_id] = Account(
                credit.account_id, credit.mode or seed.mode, credit.balance
            )
        for item in seed.datasets:
            dataset = store.create(item.name, item.schema.to_json(), "seed", now,
                                   dataset_id=item.dataset_id)  # fmt: skip
            if item.generate:
                continue  # built by the engine in a worker thread before serving
            check = RowCheck(item.schema, accepted=len(item.records))
            store.commit(dataset, CheckedRows(item.records, (), check), now,
                         snapshot_id=item.snapshot_id)  # fmt: skip
            if item.active:
                store.activate(dataset.dataset_id, dataset.snapshot_ids[-1])
        keys = [ApiKey(k.key_id, k.key, frozenset(k.scopes), k.tier, k.org) for k in seed.api_keys]
        return OpsState(
            ids=self.ids,
            keys=KeyRing.of(keys),
            tiers=dict(seed.tiers),
            datasets=store,
            artifacts=artifacts,
            uploads=UploadTable(),
            presigner=Presigner(secrets.token_bytes(32)),
            ledger=ledger,
        )

    def _generated(self) -> tuple[tuple[str, str | None, int, int, bool], ...]:
        return tuple(
            (d.dataset_id, d.snapshot_id, d.generate, d.generate_seed, d.active)
            for d in self.seed.datasets
            if d.generate
        )

    # ServiceInstance ----------------------------------------------------------------------------

    def raw_routes(self) -> Sequence[RawRoute]:
        def ops_of() -> Ops:
            return self.ops

        limit = self.seed.max_body_bytes
        return [
            *datasets.routes(ops_of, limit),
            *match.routes(ops_of, limit),
            *uploads.routes(ops_of, limit),
            *jobs.routes(ops_of, limit),
            *observability.routes(ops_of, limit),
        ]

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        return PREFIXES

    def banner_lines(self) -> list[str]:
        keys = ", ".join(f"{k.key_id} ({k.tier})" for k in self.seed.api_keys) or "none"
        lines = [
            f"API keys:      {keys} (the key values are in the seed)",
            f"Credits:       {self.seed.mode.value} mode",
        ]
        snapshots = [d.snapshot_id for d in self.seed.datasets if d.snapshot_id]
        if snapshots:
            lines.append(f"Snapshots:     {', '.join(snapshots)}")
        lines.append("Quick start:")
        lines.append(
            f'  curl -H "Authorization: Bearer $API_KEY" {self._base_url()}/api/v2/datasets'
        )
        return lines

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.engine.run(self._generated(), task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    lambda: shutil.rmtree(self.workdir, ignore_errors=True)
                )

    def begin_shutdown(self) -> None:
        self.engine.stop_nowait()

    def reset(self) -> None:
        state = self._build_state()
        self.engine.state = state
        self.ops.state = state
        for generated in self._generated():
            self.engine.generate_nowait(*generated)

    def snapshot(self) -> dict[str, Any]:
        """Datasets (not generated ones), credit balances, jobs and live artifacts (their files
        go beside the state file), for `--state-file`."""
        return self._capture(lazy=False)()

    def capture(self) -> Callable[[], dict[str, Any]]:
        """What may still change, now; rows and finished jobs, off the loop."""
        return self._capture(lazy=True)

    def _capture(self, *, lazy: bool) -> Callable[[], dict[str, Any]]:
        state = self.ops.state
        directory = self.artifact_dir
        # Which artifacts are live is decided now; their files are put in place with the rest
        # of the snapshot (off the loop when the server saves: writing and syncing files).
        live = [] if directory is None else state.artifacts.live(self.context.clock.now())

        def kept() -> list[tuple[Artifact, int]]:
            if directory is None:
                return []
            sizes = directory.keep(live)
            return [(artifact, sizes[artifact.artifact_id]) for artifact in live
                    if artifact.artifact_id in sizes]  # fmt: skip

        return persistence.capture(
            state.datasets,
            state.ledger.accounts,
            self._generated_ids(),
            state.jobs,
            kept,
            lazy=lazy,
        )

    def restore(self, data: dict[str, Any]) -> None:
        """Lay saved datasets, balances, jobs and artifacts over the seed's; ValueError and no
        change if anything is bad."""
        state = self.ops.state
        restored = persistence.read_snapshot(
            data,
            self._generated_ids(),
            now=self.context.clock.now(),
            files=self.artifact_dir,
            live_job_ids=set(state.jobs.jobs),
        )
        restored = self._take_artifacts(restored)
        persistence.apply(state, restored)
        if self.artifact_dir is not None:
            self.artifact_dir.adopt({a.artifact_id: size for a, size in restored.artifacts})
        self.engine.forget_indexes_nowait()

    def _take_artifacts(self, restored: persistence.Restored) -> persistence.Restored:
        """The restored artifacts with their saved files linked (or copied) into the work
        directory, which the engine owns; nothing is left behind if one cannot be."""
        if not restored.artifacts:
            return restored
        assert self.artifact_dir is not None  # read_snapshot refuses artifacts without one
        taken: list[tuple[Artifact, int]] = []
        try:
            for artifact, size in restored.artifacts:
                path = self.artifact_dir.take(artifact.artifact_id, self.workdir)
                taken.append((attrs.evolve(artifact, path=path), size))
        except OSError as error:
            for artifact, _ in taken:
                if artifact.path is not None:
                    artifact.path.unlink(missing_ok=True)
            reason = error.strerror or type(error).__name__
            raise ValueError(f"artifacts: cannot take {artifact.artifact_id}: {reason}") from None
        return attrs.evolve(restored, artifacts=taken)

    def _generated_ids(self) -> set[str]:
        return {d.dataset_id for d in self.seed.datasets if d.generate}

    def inspector_page(self) -> bytes | None:
        return observability.inspector_page()

    def describe(self) -> dict[str, Any]:
        state = self.ops.state
        statuses: dict[str, int] = {}
        for job in state.jobs.jobs.values():
            statuses[job.status.value] = statuses.get(job.status.value, 0) + 1
        return {
            "apiKeys": len(self.seed.api_keys),
            "mode": self.seed.mode.value,
            "datasets": len(state.datasets.datasets),
            "snapshots": len(state.datasets.snapshots),
            "jobs": statuses,
            "uploads": len(state.uploads.uploads),
            "auditEvents": len(state.audit.events),
            "indexBuilds": self.engine.index_builds,
        }
