"""First contact: the real client against the emulator."""

from __future__ import annotations

from pathlib import Path

import trio
from fabric_platform import FabricClient
from fabric_server import ALICE, start_fabric


async def test_get_me(nursery: trio.Nursery, state_dir: Path) -> None:
    server = await start_fabric(nursery, state_dir)

    def use() -> dict[str, object]:
        with FabricClient(base_url=server.http_url, principal_id=ALICE) as client:
            return client.get_me()

    me = await trio.to_thread.run_sync(use)
    assert me["principal_id"] == ALICE
    server.cancel_scope.cancel()
