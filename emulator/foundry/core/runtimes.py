"""Compute-module runtimes: sessions, Module-Auth-Tokens, deployed-app bindings, function schemas.

Owns `Runtime` (one runtime session: its token, restart policy, schemas, poll bookkeeping),
`Binding` (a deployed app RID and branch served by a runtime), `RuntimeRequest` (what the
runtime-creation route asks for) and `RuntimeRegistry` (creation and reset, token checks in
constant time, resolving a deployed app to its runtime, storing posted schemas).

A runtime's token is a secret: it is returned only by the creation route (which issues it) and
never appears in `describe`, the inspect route or a log line. Synchronous: imports nothing from
trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs

from ...platform.clock import Randomness
from ..seed import RID_PATTERN, ComputeModulesSeed, OnRestart
from .errors import AuthenticationError, InvalidArgument, NotFound
from .tokens import same_secret

MODULE_TOKEN_PREFIX = "foundry_module_auth_"
DEFAULT_BRANCH = "master"
# A runtime id is one URL path segment: no slash, no whitespace, no control characters.
RUNTIME_ID_PATTERN = re.compile(r"^[^\s/\x00-\x1f\x7f]{1,200}$")
# A replica name (the optional /replicas/{replica} path part): short and URL-safe.
REPLICA_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_FUNCTIONS = 1000


@attrs.frozen
class FunctionSchema:
    name: str
    payload: Any
    posted_at: float


@attrs.frozen
class Binding:
    deployed_app_rid: str
    branch: str
    runtime_id: str
    display_name: str
    active: bool
    seeded: bool


@attrs.define(eq=False)
class Runtime:
    runtime_id: str
    token: str = attrs.field(repr=False)
    # The seed gave the token (it survives resets unless a rotation is asked for).
    token_seeded: bool
    # What the restart notification (and a session reset) does with jobs it had taken.
    on_restart: OnRestart
    display_name: str | None
    created_at: float
    reset_at: float
    last_poll_at: float | None = None
    last_schema_at: float | None = None
    resets: int = 0
    schemas: dict[str, FunctionSchema] = attrs.field(factory=dict)

    def check_token(self, given: str | None) -> None:
        """AuthenticationError unless `given` is this runtime's token (constant-time)."""
        if given is None or not given:
            raise AuthenticationError(
                "missing_module_auth_token", "The Module-Auth-Token header is missing."
            )
        if not same_secret(given, self.token):
            raise AuthenticationError(
                "invalid_module_auth_token", "The Module-Auth-Token header is invalid."
            )


@attrs.frozen
class RuntimeRequest:
    """A validated body of POST /_emulate/foundry/compute-modules/runtimes."""

    runtime_id: str
    deployed_app_rid: str | None
    branch: str | None
    display_name: str | None
    rotate_token: bool

    @classmethod
    def from_json(cls, data: Any) -> RuntimeRequest:
        if not isinstance(data, dict):
            raise InvalidArgument("invalid_request", "The request body must be a JSON object.")
        runtime_id = data.get("runtimeId")
        if not isinstance(runtime_id, str) or not runtime_id.strip():
            raise InvalidArgument("invalid_request", "The runtimeId field is required.")
        runtime_id = runtime_id.strip()
        if not RUNTIME_ID_PATTERN.fullmatch(runtime_id):
            raise InvalidArgument(
                "invalid_request",
                "runtimeId must be at most 200 characters, without '/', spaces or controls.",
            )
        rid = _optional_text(data, "deployedAppRid")
        if rid is not None and not RID_PATTERN.fullmatch(rid):
            raise InvalidArgument(
                "invalid_request", f"deployedAppRid {rid!r} is not a resource identifier."
            )
        branch = _optional_text(data, "branch")
        if branch is None:
            branch = _optional_text(data, "deployedAppBranch")
        if branch is not None and rid is None:
            raise InvalidArgument("invalid_request", "branch needs a deployedAppRid.")
        display_name = data.get("displayName")
        if display_name is not None and (
            not isinstance(display_name, str) or not display_name.strip()
        ):
            raise InvalidArgument("invalid_request", "displayName must be a non-blank string.")
        rotate = data.get("rotateToken", False)
        if not isinstance(rotate, bool):
            raise InvalidArgument("invalid_request", "rotateToken must be true or false.")
        return cls(
            runtime_id=runtime_id,
            deployed_app_rid=rid,
            branch=branch,
            display_name=display_name,
            rotate_token=rotate,
        )


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument("invalid_request", f"{key} must be a string.")
    return value.strip() or None


@attrs.define
class RuntimeRegistry:
    """Runtimes by id, and bindings by (deployed app RID, branch).

    `bindings` is read-only from outside: `_bind`/`_unbind` keep it and two indexes (bindings by
    RID, binding keys by runtime id) in step, so resolving a deployed app and resetting a runtime
    cost the same with one binding or ten thousand.
    """

    runtimes: dict[str, Runtime] = attrs.field(factory=dict)
    bindings: dict[tuple[str, str], Binding] = attrs.field(factory=dict)
    _by_rid: dict[str, dict[str, Binding]] = attrs.field(factory=dict, init=False)
    _by_runtime: dict[str, dict[tuple[str, str], None]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        # Build the indexes from the bindings given (they start empty).
        given = list(self.bindings.values())
        self.bindings = {}
        for binding in given:
            self._bind(binding)

    def _bind(self, binding: Binding) -> None:
        key = (binding.deployed_app_rid, binding.branch)
        if key in self.bindings:
            self._unbind(key)
        self.bindings[key] = binding
        self._by_rid.setdefault(binding.deployed_app_rid, {})[binding.branch] = binding
        self._by_runtime.setdefault(binding.runtime_id, {})[key] = None

    def _unbind(self, key: tuple[str, str]) -> None:
        binding = self.bindings.pop(key)
        branches = self._by_rid[binding.deployed_app_rid]
        del branches[binding.branch]
        if not branches:
            del self._by_rid[binding.deployed_app_rid]
        keys = self._by_runtime[binding.runtime_id]
        del keys[key]
        if not keys:
            del self._by_runtime[binding.runtime_id]

    @classmethod
    def from_seed(
        cls,
        seed: ComputeModulesSeed,
        now: float,
        randomness: Randomness,
        previous: RuntimeRegistry | None = None,
    ) -> RuntimeRegistry:
        """The seeded runtimes and bindings. Tokens the emulator made up for seeded runtimes
        are taken over from `previous`, so a module keeps working across an emulator reset."""
        registry = cls()
        for runtime_seed in seed.runtimes:
            token = runtime_seed.module_auth_token
            seeded = token is not None
            if token is None:
                earlier = (
                    None if previous is None else previous.runtimes.get(runtime_seed.runtime_id)
                )
                token = (
                    earlier.token
                    if earlier is not None and not earlier.token_seeded
                    else randomness.token(MODULE_TOKEN_PREFIX, 24)
                )
            registry.runtimes[runtime_seed.runtime_id] = Runtime(
                runtime_id=runtime_seed.runtime_id,
                token=token,
                token_seeded=seeded,
                on_restart=runtime_seed.on_restart,
                display_name=None,
                created_at=now,
                reset_at=now,
            )
        for app in seed.deployed_apps:
            registry._bind(
                Binding(
                    deployed_app_rid=app.deployed_app_rid,
                    branch=app.branch,
                    runtime_id=app.runtime_id,
                    display_name=app.display_name,
                    active=app.active,
                    seeded=True,
                )
            )
        return registry

    def get(self, runtime_id: str) -> Runtime:
        runtime = self.runtimes.get(runtime_id)
        if runtime is None:
            raise NotFound(
                "not_found", f"Unknown runtime '{runtime_id}'.", {"runtimeId": runtime_id}
            )
        return runtime

    def authenticate(self, runtime_id: str, token: str | None) -> Runtime:
        """The runtime, if `token` is its Module-Auth-Token: NotFound, then AuthenticationError."""
        runtime = self.get(runtime_id)
        runtime.check_token(token)
        return runtime

    def bindings_of(self, runtime_id: str) -> list[Binding]:
        return [self.bindings[key] for key in self._by_runtime.get(runtime_id, ())]

    def create_or_reset(
        self, request: RuntimeRequest, now: float, randomness: Randomness
    ) -> tuple[Runtime, bool]:
        """Create the runtime, or reset its session; returns it and whether it existed.

        A reset keeps the token unless `rotate_token`, forgets the posted schemas, and keeps the
        runtime's bindings unless a deployed app is given (then that app and branch become its
        only binding, moved from any other runtime).
        """
        existing = self.runtimes.get(request.runtime_id)
        if existing is None:
            runtime = Runtime(
                runtime_id=request.runtime_id,
                token=randomness.token(MODULE_TOKEN_PREFIX, 24),
                token_seeded=False,
                on_restart=OnRestart.FAIL,
                display_name=request.display_name,
                created_at=now,
                reset_at=now,
            )
            self.runtimes[runtime.runtime_id] = runtime
        else:
            runtime = existing
            if request.rotate_token:
                runtime.token = randomness.token(MODULE_TOKEN_PREFIX, 24)
                runtime.token_seeded = False
            if request.display_name is not None:
                runtime.display_name = request.display_name
            runtime.reset_at = now
            runtime.resets += 1
            runtime.last_poll_at = None
            runtime.last_schema_at = None
            runtime.schemas = {}
        if request.deployed_app_rid is not None:
            branch = request.branch or DEFAULT_BRANCH
            for key in list(self._by_runtime.get(runtime.runtime_id, ())):
                self._unbind(key)
            self._bind(
                Binding(
                    deployed_app_rid=request.deployed_app_rid,
                    branch=branch,
                    runtime_id=runtime.runtime_id,
                    display_name=request.display_name or request.deployed_app_rid,
                    active=True,
                    seeded=False,
                )
            )
        return runtime, existing is not None

    def resolve(self, deployed_app_rid: str, branch: str | None) -> Binding:
        """The binding that serves a deployed app; without a branch, master or the only one."""
        if branch is not None:
            binding = self.bindings.get((deployed_app_rid, branch))
            if binding is None:
                raise NotFound(
                    "not_found",
                    f"No compute-module runtime is bound to deployed app '{deployed_app_rid}' "
                    f"on branch '{branch}'.",
                    {"deployedAppRid": deployed_app_rid, "deployedAppBranch": branch},
                )
        else:
            by_branch = self._by_rid.get(deployed_app_rid, {})
            candidates = list(by_branch.values())
            if not candidates:
                raise NotFound(
                    "not_found",
                    f"No compute-module runtime is bound to deployed app '{deployed_app_rid}'.",
                    {"deployedAppRid": deployed_app_rid},
                )
            if DEFAULT_BRANCH in by_branch:
                binding = by_branch[DEFAULT_BRANCH]
            elif len(candidates) == 1:
                binding = candidates[0]
            else:
                raise InvalidArgument(
                    "invalid_request",
                    f"Deployed app '{deployed_app_rid}' runs on several branches "
                    f"({', '.join(sorted(by_branch))}); give deployedAppBranch.",
                )
        if not binding.active:
            raise NotFound(
                "not_found",
                f"Deployed app '{deployed_app_rid}' (branch {binding.branch}) is not active.",
                {"deployedAppRid": deployed_app_rid},
            )
        if binding.runtime_id not in self.runtimes:
            raise NotFound(
                "not_found",
                f"Deployed app '{deployed_app_rid}' is bound to runtime '{binding.runtime_id}', "
                "which does not exist.",
                {"deployedAppRid": deployed_app_rid},
            )
        return binding

    def store_schemas(self, runtime: Runtime, payload: Any, now: float) -> list[str]:
        """Store the function schemas a module posted; returns the function names stored.

        Accepts the array both libraries send and the other shapes older clients used: an object
        with `functions` or `schemas`, a named entry (`functionName`/`function_name`/`name`, the
        schema in `schema`, `schemaPayload` or the entry itself), or a map of name to schema.
        """
        entries = list(_schema_entries(payload, depth=0))
        merged = dict(runtime.schemas)
        for name, schema in entries:
            merged[name] = FunctionSchema(name=name, payload=schema, posted_at=now)
        if len(merged) > MAX_FUNCTIONS:
            raise InvalidArgument(
                "invalid_request", f"A runtime can hold at most {MAX_FUNCTIONS} function schemas."
            )
        runtime.schemas = merged
        runtime.last_schema_at = now
        return [name for name, _ in entries]


_NAME_KEYS = ("functionName", "function_name", "name")


def _schema_entries(payload: Any, depth: int) -> Iterable[tuple[str, Any]]:
    if depth > 4:
        raise InvalidArgument("invalid_request", "The schema payload is nested too deeply.")
    if isinstance(payload, list):
        for item in payload:
            yield from _schema_entries(item, depth + 1)
        return
    if not isinstance(payload, dict):
        return
    for key in ("functions", "schemas"):
        if isinstance(payload.get(key), list):
            yield from _schema_entries(payload[key], depth + 1)
            return
    for key in _NAME_KEYS:
        name = payload.get(key)
        if isinstance(name, str) and name:
            if "schema" in payload:
                yield name, payload["schema"]
            elif "schemaPayload" in payload:
                yield name, payload["schemaPayload"]
            else:
                yield name, payload
            return
    for name, schema in payload.items():
        yield str(name), schema
