"""Seed validation: every problem is one line naming the file, the YAML path and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator.foundry.seed import FoundrySeed
from emulator.platform.seeds import default_seed_path, load_seed, seed_from_mapping
from emulator.platform.seedschema import SeedError
from emulator.services import registered_services

ROOT = Path(__file__).resolve().parents[2]


def read(data: dict[str, Any]) -> FoundrySeed:
    block = seed_from_mapping(data, registered_services()).blocks["foundry"]
    assert isinstance(block, FoundrySeed)
    return block


def user(name: str, **extra: Any) -> dict[str, Any]:
    return {"username": name, **extra}


BAD_SEEDS: list[tuple[dict[str, Any], str, str]] = [
    ({"fondry": {}}, "fondry", "unknown key"),
    (
        {"foundry": {"users": [user("a"), user("b"), {"usernme": "c"}]}},
        "foundry.users[2].usernme",
        "unknown key",
    ),
    (
        {"foundry": {"users": [user("a"), {"display_name": "x"}]}},
        "foundry.users[1].username",
        "required field is missing",
    ),
    ({"foundry": {"users": [user("a"), user("a")]}}, "foundry.users[1]", "duplicate username 'a'"),
    (
        {"foundry": {"users": [user("a", active="yes")]}},
        "foundry.users[0].active",
        "expected true or false",
    ),
    (
        {"foundry": {"users": [user("a", principal_type="robot")]}},
        "foundry.users[0].principal_type",
        "must be one of",
    ),
    ({"foundry": {"users": [user("a", id="not-a-uuid")]}}, "foundry.users[0].id", "must be a UUID"),
    ({"foundry": {"users": "jane"}}, "foundry.users", "expected a list"),
    (
        {
            "foundry": {
                "oauth_clients": [
                    {"client_id": "x", "client_secret": "s"},
                    {"client_id": "x", "client_secret": "t"},
                ]
            }
        },
        "foundry.oauth_clients[1]",
        "duplicate client_id 'x'",
    ),
    (
        {"foundry": {"oauth_clients": [{"client_id": "x", "grant_types": ["implicit"]}]}},
        "foundry.oauth_clients[0].grant_types[0]",
        "must be one of",
    ),
    (
        {"foundry": {"oauth_clients": [{"client_id": "x", "grant_types": ["client_credentials"]}]}},
        "foundry.oauth_clients[0]",
        "needs a client_secret",
    ),
    (
        {"foundry": {"oauth": {"access_token_ttl": 0}}},
        "foundry.oauth.access_token_ttl",
        "at least 1",
    ),
    (
        {"foundry": {"enrollment": {"rid": "not-a-rid"}}},
        "foundry.enrollment.rid",
        "not a resource identifier",
    ),
    (
        {"foundry": {"connections": [{"display_name": "c"}]}},
        "foundry.connections[0].parent_folder_rid",
        "required field is missing",
    ),
    (
        {
            "foundry": {
                "connections": [
                    {
                        "display_name": "c",
                        "parent_folder_rid": "ri.compass.main.folder.f",
                        "domains": [{"host": "h", "scheme": "FTP"}],
                    }
                ]
            }
        },
        "foundry.connections[0].domains[0].scheme",
        "must be one of",
    ),
    (
        {"foundry": {"ontologies": [{"api_name": "o", "queries": [{"api_name": "q"}]}]}},
        "foundry.ontologies[0].queries[0]",
        "needs a result, cases, or both",
    ),
    (
        {
            "foundry": {
                "ontologies": [
                    {
                        "api_name": "o",
                        "queries": [{"api_name": "q", "result": 1}, {"api_name": "q", "result": 2}],
                    }
                ]
            }
        },
        "foundry.ontologies[0].queries[1]",
        "duplicate query api_name 'q'",
    ),
    (
        {"foundry": {"ontologies": [{"api_name": "o"}, {"api_name": "o"}]}},
        "foundry.ontologies[1]",
        "duplicate ontology api_name",
    ),
    (
        {"foundry": {"compute_modules": {"runtimes": [{"runtime_id": "r"}, {"runtime_id": "r"}]}}},
        "foundry.compute_modules.runtimes[1]",
        "duplicate runtime_id 'r'",
    ),
    (
        {
            "foundry": {
                "compute_modules": {"runtimes": [{"runtime_id": "r", "module_auth_token": "a b"}]}
            }
        },
        "foundry.compute_modules.runtimes[0].module_auth_token",
        "must not contain spaces",
    ),
    (
        {
            "foundry": {
                "compute_modules": {
                    "deployed_apps": [
                        {"deployed_app_rid": "ri.foundry.main.deployed-app.a", "runtime_id": "r"},
                        {"deployed_app_rid": "ri.foundry.main.deployed-app.a", "runtime_id": "s"},
                    ]
                }
            }
        },
        "foundry.compute_modules.deployed_apps[1]",
        "duplicate deployed app and branch",
    ),
    (
        {"foundry": {"compute_modules": {"limits": {"poll_timeout": "soon"}}}},
        "foundry.compute_modules.limits.poll_timeout",
        "expected a number",
    ),
    (
        {"tokens": {"t": {"username": "ghost"}}, "foundry": {"users": [user("a")]}},
        "tokens.t.username",
        "not in foundry.users",
    ),
    ({"tokens": {"t": {"scopes": []}}}, "tokens.t", "exactly one of username or login"),
    (
        {
            "tokens": {"t": {"username": "a", "scopes": "api:admin-read"}},
            "foundry": {"users": [user("a")]},
        },
        "tokens.t.scopes",
        "expected a list",
    ),
]


@pytest.mark.parametrize(("data", "path", "message"), BAD_SEEDS)
def test_bad_seeds_name_the_path(data: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SeedError) as caught:
        seed_from_mapping(data, registered_services())
    assert caught.value.path == path
    assert message in caught.value.message
    assert "\n" not in str(caught.value)


def test_default_seed_is_a_useful_world() -> None:
    seed = load_seed(default_seed_path(), registered_services())
    foundry = seed.blocks["foundry"]
    assert isinstance(foundry, FoundrySeed)
    assert len([u for u in foundry.users if u.principal_type.value == "human"]) >= 2
    grants = {g for client in foundry.oauth_clients for g in client.grant_types}
    assert {"authorization_code", "refresh_token", "client_credentials"} <= grants
    assert {t.username for t in foundry.tokens} <= {u.username for u in foundry.users}
    assert foundry.connections
    assert foundry.ontologies
    assert any(app.runtime_id == "agent-loop" for app in foundry.compute_modules.deployed_apps)


def test_packaged_default_seed_is_the_source_tree_one() -> None:
    packaged = ROOT / "emulator" / "default_seed.yaml"
    assert packaged.read_bytes() == (ROOT / "seeds" / "default.yaml").read_bytes()


def test_deployed_app_naming_an_unlisted_runtime_creates_it() -> None:
    seed = read(
        {
            "foundry": {
                "compute_modules": {
                    "deployed_apps": [
                        {
                            "deployed_app_rid": "ri.foundry.main.deployed-app.x",
                            "runtime_id": "new-runtime",
                        }
                    ]
                }
            }
        }
    )
    assert [r.runtime_id for r in seed.compute_modules.runtimes] == ["new-runtime"]
    assert seed.compute_modules.deployed_apps[0].branch == "master"


def test_ids_are_stable_across_reads() -> None:
    data = {"foundry": {"users": [user("jane")], "ontologies": [{"api_name": "o", "queries": []}]}}
    assert read(data).users[0].id == read(data).users[0].id
    assert read(data).ontologies[0].rid == read(data).ontologies[0].rid


def test_prior_emulator_login_field_is_accepted() -> None:
    seed = seed_from_mapping(
        {"tokens": {"t": {"login": "a"}}, "foundry": {"users": [user("a")]}}, registered_services()
    )
    assert seed.blocks["foundry"].tokens[0].username == "a"
    assert seed.blocks["foundry"].tokens[0].scopes == ()


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("foundry:\n  users: [\n", encoding="utf-8")
    with pytest.raises(SeedError, match=r"broken.yaml: <top>: not valid YAML: line \d+"):
        load_seed(path, registered_services())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="file not found"):
        load_seed(tmp_path / "nope.yaml", registered_services())
