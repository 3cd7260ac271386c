"""Example tests written the way a user of the pytest plugin writes them (both styles)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import requests

from emulator.embedded import EmulatorHandle, open_emulator


async def test_trio_style_reads_the_current_user(foundry_emulator: EmulatorHandle) -> None:
    token = foundry_emulator.foundry.mint_token("jane", ["api:ontologies-read"])
    async with httpx.AsyncClient(base_url=foundry_emulator.http_url) as client:
        health = await client.get("/_emulate/health")
        listed = await client.get("/_emulate/state", headers={"Authorization": f"Bearer {token}"})
    assert health.status_code == 200
    assert listed.status_code == 200
    assert token not in listed.text


async def test_trio_style_https_with_the_ca(foundry_emulator: EmulatorHandle) -> None:
    assert foundry_emulator.ca_path is not None
    context = ssl.create_default_context(cafile=str(foundry_emulator.ca_path))
    async with httpx.AsyncClient(base_url=foundry_emulator.https_url, verify=context) as client:
        assert (await client.get("/_emulate/health")).status_code == 200


@pytest.mark.foundry_seed({"foundry": {"users": [{"username": "solo"}]}})
async def test_marker_chooses_the_seed(foundry_emulator: EmulatorHandle) -> None:
    assert set(foundry_emulator.foundry.instance.identity.directory.principals) == {"solo"}
    with pytest.raises(ValueError, match="no active principal"):
        foundry_emulator.foundry.mint_token("jane")


def test_thread_style_with_requests(foundry_emulator_thread: EmulatorHandle) -> None:
    response = requests.get(f"{foundry_emulator_thread.http_url}/_emulate/health", timeout=10)
    assert response.status_code == 200
    token = foundry_emulator_thread.foundry.mint_token("bob", ["api:ontologies-read"])
    assert token.startswith("foundry_")
    ca = foundry_emulator_thread.ca_path
    assert ca is not None
    secure = requests.get(
        f"{foundry_emulator_thread.https_url}/_emulate/health", verify=str(ca), timeout=10
    )
    assert secure.status_code == 200


async def test_open_emulator_programmatic(tmp_path: Path) -> None:
    async with open_emulator(tls_enabled=False, state_dir=tmp_path) as handle:
        assert handle.https_url is None
        async with httpx.AsyncClient(base_url=handle.http_url) as client:
            assert (await client.get("/_emulate/health")).status_code == 200
