"""The service contract, proven with a small dummy service that the platform has never heard of.

The dummy is registered the way a real service is (one entry in the registry: the test patches
`emulator.services.registered_services`), and everything generic must pick it up with no
generic edit: its own listener, routes (blueprint and raw), its error family for handler,
framework and domain errors, scoped reset and state, the OpenAPI document, the state file, the
CLI's check and init, the embedded handle and the route fuzzer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import routefuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Blueprint, Response

from emulator import cli
from emulator import services as registry
from emulator.embedded import EmulatorHandle, run_in_thread
from emulator.foundry.service import FoundryService
from emulator.platform.errors import ApiError, ErrorFamily
from emulator.platform.seedschema import Node
from emulator.platform.service import Service, ServiceContext, ServiceInstance
from emulator.platform.statefile import collect, restore
from emulator.web.http import json_response, parse_json, read_body
from emulator.web.rawasgi import RawRequest, RawRoute


class NoSuchItem(Exception):
    """The dummy's domain error: handlers raise it, its family translates it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no item {name!r}")
        self.name = name


class DummyFamily(ErrorFamily):
    """The dummy's own error shape: {"problem": {"code", "message"}}."""

    def body(self, error: ApiError) -> Any:
        return {"problem": {"code": error.code, "message": error.description}}

    def framework_code(self, status: int) -> str:
        return f"HTTP_{status}"

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "required": ["problem"]}

    def translate(self, error: Exception) -> ApiError | None:
        if isinstance(error, NoSuchItem):
            return self.error(404, "NO_SUCH_ITEM", str(error))
        return None


DUMMY = DummyFamily("dummy")


@attrs.frozen
class DummySeed:
    greeting: str = "hello"

    @classmethod
    def from_node(cls, node: Node | None) -> DummySeed:
        if node is None:
            return cls()
        fields = node.fields(optional=("greeting",))
        return cls(greeting=fields.str("greeting", "hello"))


class DummyInstance(ServiceInstance):
    default_family = DUMMY
    secret_names = frozenset({"dummy_secret"})

    def __init__(self, seed: DummySeed, context: ServiceContext) -> None:
        self.seed = seed
        self.context = context
        self.items: dict[str, str] = {}

    def blueprints(self) -> Sequence[Blueprint]:
        blueprint = Blueprint("dummy", __name__)

        @blueprint.post("/dummy/items")
        async def create_item() -> Response:
            """Create an item."""
            raw = await read_body(DUMMY, 64 * 1024, 5.0)
            body = parse_json(raw, DUMMY, "BAD_ITEM")
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                raise DUMMY.error(400, "BAD_ITEM", "give a JSON object with a string name")
            self.items[body["name"]] = str(body.get("value", ""))
            return json_response({"name": body["name"]}, 201)

        @blueprint.get("/dummy/items/<name>")
        async def get_item(name: str) -> Response:
            """Read an item."""
            if name not in self.items:
                raise NoSuchItem(name)
            return json_response({"name": name, "value": self.items[name]})

        return [blueprint]

    def raw_routes(self) -> Sequence[RawRoute]:
        async def hello(request: RawRequest) -> None:
            await request.respond_json(200, {"greeting": self.seed.greeting})

        return [RawRoute("GET", "/dummy/hello", hello, summary="Say hello.")]

    def banner_lines(self) -> list[str]:
        return [f"Greeting:      {self.seed.greeting}"]

    def reset(self) -> None:
        self.items.clear()

    def describe(self) -> dict[str, Any]:
        return {"items": len(self.items)}

    def snapshot(self) -> dict[str, Any] | None:
        return {"items": dict(self.items)}

    def restore(self, data: dict[str, Any]) -> None:
        items = data.get("items")
        if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
            raise ValueError("items must be an object of strings")
        self.items = dict(items)


class DummyService(Service):
    name = "dummy"
    title = "Dummy"
    default_http_port = 4999
    default_https_port = 5443

    def read_seed(self, block: Node | None, extra: Mapping[str, Node]) -> DummySeed:
        return DummySeed.from_node(block)

    def start(self, seed: Any, context: ServiceContext) -> DummyInstance:
        return DummyInstance(seed, context)

    def summary(self, seed: Any) -> list[str]:
        return [f"greeting: {seed.greeting}"]

    def starter_block(self) -> str:
        return "dummy:\n  greeting: hello   # what GET /dummy/hello answers\n"


@pytest.fixture
def with_dummy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the dummy beside Foundry, as one registry line would."""
    monkeypatch.setattr(registry, "registered_services", lambda: (FoundryService(), DummyService()))


@pytest.fixture
def both(with_dummy: None, tmp_path: Path) -> Iterator[EmulatorHandle]:
    seed = {"foundry": {"users": [{"username": "jane"}]}, "dummy": {"greeting": "hi"}}
    with run_in_thread(seed, state_dir=tmp_path, tls_enabled=False) as handle:
        yield handle


def test_a_seed_block_starts_the_service_on_its_own_listener(both: EmulatorHandle) -> None:
    assert list(both.emulator.sites) == ["foundry", "dummy"]
    dummy, foundry = both.url("dummy"), both.url("foundry")
    assert dummy != foundry
    assert httpx.get(f"{dummy}/dummy/hello").json() == {"greeting": "hi"}
    # URL spaces never collide: Foundry's listener does not serve the dummy's routes.
    assert httpx.get(f"{foundry}/dummy/hello").status_code == 404
    health = httpx.get(f"{dummy}/_emulate/health").json()
    assert health["service"] == "dummy"
    assert both.service("dummy").seed.greeting == "hi"


def test_only_services_with_a_block_run(with_dummy: None, tmp_path: Path) -> None:
    with run_in_thread({"dummy": {}}, state_dir=tmp_path, tls_enabled=False) as handle:
        assert list(handle.emulator.sites) == ["dummy"]
        with pytest.raises(KeyError, match="not running"):
            handle.url("foundry")


def test_errors_are_answered_in_the_services_family(both: EmulatorHandle) -> None:
    base = both.url("dummy")
    missing = httpx.get(f"{base}/dummy/items/nope")
    assert missing.status_code == 404
    assert missing.json() == {"problem": {"code": "NO_SUCH_ITEM", "message": "no item 'nope'"}}
    bad = httpx.post(f"{base}/dummy/items", content=b"[1]")
    assert bad.json()["problem"]["code"] == "BAD_ITEM"
    unknown = httpx.get(f"{base}/nowhere")
    assert (unknown.status_code, unknown.json()["problem"]["code"]) == (404, "HTTP_404")
    wrong = httpx.delete(f"{base}/dummy/hello")
    assert (wrong.status_code, wrong.json()["problem"]["code"]) == (405, "HTTP_405")
    assert wrong.headers["allow"] == "GET"


def test_reset_and_state_are_scoped_to_the_listeners_service(both: EmulatorHandle) -> None:
    base = both.url("dummy")
    assert httpx.post(f"{base}/dummy/items", json={"name": "a"}).status_code == 201
    assert httpx.get(f"{base}/_emulate/state").json()["services"] == {"dummy": {"items": 1}}
    foundry_state = httpx.get(f"{both.url('foundry')}/_emulate/state").json()
    assert list(foundry_state["services"]) == ["foundry"]
    # Resetting Foundry leaves the dummy alone; resetting the dummy empties it.
    assert httpx.post(f"{both.url('foundry')}/_emulate/reset").status_code == 200
    assert httpx.get(f"{base}/dummy/items/a").status_code == 200
    assert httpx.post(f"{base}/_emulate/reset").status_code == 200
    assert httpx.get(f"{base}/dummy/items/a").status_code == 404


def test_request_log_is_per_service_and_redacts_its_secret_names(both: EmulatorHandle) -> None:
    base = both.url("dummy")
    httpx.get(f"{base}/dummy/hello", params={"dummy_secret": "s3cret", "plain": "v"})
    records = httpx.get(f"{base}/_emulate/requests").json()["requests"]
    assert [r["path"] for r in records] == ["/dummy/hello"]
    assert "s3cret" not in records[0]["query"]
    assert "plain=v" in records[0]["query"]
    foundry_log = httpx.get(f"{both.url('foundry')}/_emulate/requests").json()["requests"]
    assert all(r["path"] != "/dummy/hello" for r in foundry_log)


def test_openapi_lists_raw_and_blueprint_routes_with_the_family(both: EmulatorHandle) -> None:
    document = httpx.get(f"{both.url('dummy')}/_emulate/openapi.json").json()
    paths = document["paths"]
    assert {"/dummy/hello", "/dummy/items", "/dummy/items/{name}"} <= set(paths)
    hello = paths["/dummy/hello"]["get"]
    assert hello["summary"] == "Say hello."
    assert hello["x-error-family"] == "dummy"
    assert routefuzz.required_error_keys(hello) == {"problem"}
    assert "/api/v2/admin/users/getCurrent" not in paths
    assert document["info"]["title"].startswith("Dummy")


def test_state_file_round_trip(both: EmulatorHandle, with_dummy: None, tmp_path: Path) -> None:
    httpx.post(f"{both.url('dummy')}/dummy/items", json={"name": "kept", "value": "v"})
    document = both.call(collect, both.emulator.services)
    assert document["dummy"] == {"items": {"kept": "v"}}
    with run_in_thread({"dummy": {}}, state_dir=tmp_path, tls_enabled=False) as second:
        carried = second.call(restore, tmp_path / "s.json", second.emulator.services, document)
        assert set(carried) == {"foundry"}
        assert httpx.get(f"{second.url('dummy')}/dummy/items/kept").json()["value"] == "v"


def test_cli_check_and_init_cover_the_service(
    with_dummy: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starter = tmp_path / "starter.yaml"
    assert cli.main(["init", "--out", str(starter)]) == 0
    text = starter.read_text()
    assert "dummy:\n  greeting: hello" in text
    assert "\nfoundry:\n" in text
    capsys.readouterr()
    assert cli.main(["check", str(starter)]) == 0
    out = capsys.readouterr().out
    assert "  dummy:\n    greeting: hello" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("dummy:\n  greting: typo\n")
    assert cli.main(["check", str(bad)]) == 2
    assert "dummy.greting: unknown key" in capsys.readouterr().err


def test_endpoints_file_names_every_service(with_dummy: None, tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    seed = {"foundry": {}, "dummy": {}}
    with run_in_thread(seed, state_dir=tmp_path, endpoints_file=path) as handle:
        written = json.loads(path.read_text())
        assert written["services"]["dummy"] == {
            "http": handle.url("dummy"),
            "https": handle.url("dummy", tls=True),
        }
        assert set(written["services"]) == {"foundry", "dummy"}
        assert written["ca"] == str(handle.ca_path)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_fuzzer_covers_the_service(both: EmulatorHandle, data: st.DataObject) -> None:
    base = both.url("dummy")
    document = httpx.get(f"{base}/_emulate/openapi.json").json()
    routefuzz.exercise(data, base, document, segments=st.text(min_size=1, max_size=8))
