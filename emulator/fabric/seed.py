"""The `fabric:` seed block: organizations with members, teams and API keys, the JWT secret,
production mode, scripted providers, the price table, and executor/event/asset limits.

Owns the frozen seed values, each built by a named constructor from a seed `Node` so that
every problem is one SeedError with its YAML path (`fabric.organizations[1].api_keys[0].key`),
and `populate`, which loads a validated seed into a fresh `ControlPlane`. Imports no YAML and
nothing from trio, quart or hypercorn.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from ..platform.seedschema import Node, check_unique
from .core.apikeys import KEY_PREFIX, PREFIX_LENGTH, SCOPE_NAMES
from .core.config import EngineConfig, PlaneConfig
from .core.providers import ECHO, MODALITIES, TIERS, Catalog, Latency, Price, ProviderSpec
from .core.tenancy import DEFAULT_ORG_ID, SLUG, Role

if TYPE_CHECKING:
    from .core.plane import ControlPlane

STARTER_BLOCK = """\
fabric:
  # Development mode: any X-Principal-Id UUID is accepted. production: true refuses it.
  production: false
  # HS256 secret for Bearer JWTs (sub = principal id); at least 32 bytes.
  # jwt_secret: change-me-to-a-long-random-string-of-32-bytes
  organizations:
    - slug: acme
      name: Acme
      members:
        - principal_id: 11111111-1111-4111-8111-111111111111
          role: owner
      api_keys:
        # Requests with this key act as its principal, in this organization only.
        - name: ci
          key: fab_ReplaceMeWithYourOwnTestKey000000
          principal_id: 11111111-1111-4111-8111-111111111111
          scopes: [jobs:write, jobs:read]
  # Scripted providers beside the built-in Echo provider, for load tests.
  providers:
    - id: fast-text
      modalities: [text]
      models: [fast-1]
      tier: basic
      input_price_per_token: 0.000001
      output_price_per_token: 0.000002
      latency_ms: {min_ms: 20, max_ms: 80}
      tokens_per_second: 200
      failure_rate: 0.0
"""

_ID_NAMESPACE = uuid.UUID("0f1c5a52-7a7e-4d8e-9a0b-3b6c2d1e4f10")
ROLES = tuple(role.value for role in Role)


def stable_id(*parts: str) -> str:
    """Ids the seed leaves out are derived from names, so they survive restarts."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


def _uuid(node: Node) -> str:
    text = node.as_str()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise node.error(f"{text!r} is not a UUID") from None


def _slug(node: Node) -> str:
    text = node.as_str()
    if not SLUG.fullmatch(text):
        raise node.error(f"{text!r} is not a slug (^[a-z0-9][a-z0-9-]{{1,62}}$)")
    return text


@attrs.frozen
class MemberSeed:
    principal_id: str
    role: str

    @classmethod
    def from_node(cls, node: Node) -> MemberSeed:
        f = node.fields(required=("principal_id",), optional=("role",))
        role = f.get("role")
        return cls(_uuid(f["principal_id"]), "member" if role is None else role.as_choice(ROLES))


@attrs.frozen
class TeamSeed:
    id: str
    slug: str
    name: str
    members: tuple[MemberSeed, ...]

    @classmethod
    def from_node(cls, node: Node, org_slug: str) -> TeamSeed:
        f = node.fields(required=("slug",), optional=("id", "name", "members"))
        slug = _slug(f["slug"])
        given = f.get("id")
        return cls(
            id=stable_id("team", org_slug, slug) if given is None else _uuid(given),
            slug=slug,
            name=f.str("name", slug),
            members=tuple(MemberSeed.from_node(m) for m in f.list("members")),
        )


@attrs.frozen
class ApiKeySeed:
    id: str
    name: str
    key: str
    principal_id: str
    scopes: tuple[str, ...]
    disabled: bool

    @classmethod
    def from_node(cls, node: Node, org_slug: str) -> ApiKeySeed:
        f = node.fields(
            required=("name", "key", "principal_id"), optional=("id", "scopes", "disabled")
        )
        key_node = f["key"]
        key = key_node.as_str()
        if not key.startswith(KEY_PREFIX) or len(key) < PREFIX_LENGTH + 8:
            raise key_node.error("an API key must start with fab_ and have at least 20 characters")
        scopes = []
        for item in f.list("scopes"):
            scopes.append(item.as_choice(SCOPE_NAMES))
        name = f.str("name")
        given = f.get("id")
        return cls(
            id=stable_id("api_key", org_slug, name) if given is None else _uuid(given),
            name=name,
            key=key,
            principal_id=_uuid(f["principal_id"]),
            scopes=tuple(scopes),
            disabled=f.bool("disabled", False),
        )


@attrs.frozen
class OrganizationSeed:
    id: str
    slug: str
    name: str
    members: tuple[MemberSeed, ...]
    teams: tuple[TeamSeed, ...]
    api_keys: tuple[ApiKeySeed, ...]

    @classmethod
    def from_node(cls, node: Node) -> OrganizationSeed:
        f = node.fields(required=("slug",), optional=("id", "name", "members", "teams", "api_keys"))
        slug = _slug(f["slug"])
        given = f.get("id")
        if slug == "default":
            org_id = DEFAULT_ORG_ID
            if given is not None and _uuid(given) != DEFAULT_ORG_ID:
                raise given.error(f"the default organization's id is {DEFAULT_ORG_ID}")
        else:
            org_id = stable_id("organization", slug) if given is None else _uuid(given)
            if org_id == DEFAULT_ORG_ID:
                raise node.error(f"id {DEFAULT_ORG_ID} belongs to the organization slugged default")
        member_nodes = f.list("members")
        members = tuple(MemberSeed.from_node(m) for m in member_nodes)
        check_unique(zip(member_nodes, (m.principal_id for m in members), strict=True), "member")
        team_nodes = f.list("teams")
        teams = tuple(TeamSeed.from_node(t, slug) for t in team_nodes)
        check_unique(zip(team_nodes, (t.slug for t in teams), strict=True), "team slug")
        key_nodes = f.list("api_keys")
        keys = tuple(ApiKeySeed.from_node(k, slug) for k in key_nodes)
        check_unique(zip(key_nodes, (k.name for k in keys), strict=True), "api key name")
        member_ids = {m.principal_id for m in members}
        for key_node, key in zip(key_nodes, keys, strict=True):
            if key.principal_id not in member_ids:
                raise Node(None, f"{key_node.path}.principal_id", key_node.source).error(
                    f"principal {key.principal_id} is not a member of organization {slug}"
                )
        for team_node, team in zip(team_nodes, teams, strict=True):
            for index, member in enumerate(team.members):
                if member.principal_id not in member_ids:
                    path = f"{team_node.path}.members[{index}].principal_id"
                    raise Node(None, path, team_node.source).error(
                        f"principal {member.principal_id} is not a member of organization {slug}"
                    )
        name_node = f.get("name")
        default_name = "Default Organization" if slug == "default" else slug
        return cls(
            id=org_id,
            slug=slug,
            name=default_name if name_node is None else name_node.as_str(),
            members=members,
            teams=teams,
            api_keys=keys,
        )


def _latency(node: Node | None) -> Latency:
    """A number of milliseconds, or {min_ms, max_ms} for a uniform spread."""
    if node is None:
        return Latency()
    if isinstance(node.value, int | float) and not isinstance(node.value, bool):
        fixed = node.as_float(minimum=0)
        return Latency(fixed, fixed)
    f = node.fields(required=("min_ms", "max_ms"))
    low = f["min_ms"].as_float(minimum=0)
    high = f["max_ms"].as_float(minimum=0)
    if high < low:
        raise f["max_ms"].error("must not be below min_ms")
    return Latency(low, high)


def provider_from_node(node: Node) -> ProviderSpec:
    f = node.fields(
        required=("id", "modalities", "models"),
        optional=(
            "tier",
            "input_price_per_token",
            "output_price_per_token",
            "latency_ms",
            "tokens_per_second",
            "failure_rate",
            "healthy",
        ),
    )
    provider_id = f.str("id")
    if provider_id == ECHO.provider_id:
        raise f["id"].error("echo is built in and cannot be redefined")
    modalities = tuple(item.as_choice(MODALITIES) for item in f.list("modalities"))
    if not modalities:
        raise f["modalities"].error("must name at least one modality")
    models = f.str_list("models")
    if not models:
        raise f["models"].error("must name at least one model")
    tier = f.get("tier")
    rate = f.float("failure_rate", 0.0, minimum=0.0)
    if rate > 1.0:
        raise f["failure_rate"].error("must be between 0 and 1")
    pace = f.get("tokens_per_second")
    return ProviderSpec(
        provider_id=provider_id,
        modalities=modalities,
        models=models,
        tier="basic" if tier is None else tier.as_choice(TIERS),
        price=Price(
            f.float("input_price_per_token", 0.0, minimum=0.0),
            f.float("output_price_per_token", 0.0, minimum=0.0),
        ),
        latency=_latency(f.get("latency_ms")),
        tokens_per_second=None if pace is None else pace.as_float(minimum=0.001),
        failure_rate=rate,
        healthy=f.bool("healthy", True),
    )


@attrs.frozen
class PriceSeed:
    provider_id: str
    model: str
    price: Price

    @classmethod
    def from_node(cls, node: Node) -> PriceSeed:
        f = node.fields(
            required=("provider", "model"),
            optional=("input_per_token", "output_per_token"),
        )
        return cls(
            f.str("provider"),
            f.str("model"),
            Price(
                f.float("input_per_token", 0.0, minimum=0.0),
                f.float("output_per_token", 0.0, minimum=0.0),
            ),
        )


def _engine_config(node: Node | None, events: Node | None) -> EngineConfig:
    base = EngineConfig()
    buffer = base.subscriber_buffer
    if events is not None:
        buffer = events.fields(
            optional=("retention", "subscriber_buffer", "keepalive_seconds")
        ).int("subscriber_buffer", base.subscriber_buffer, minimum=1)
    if node is None:
        return attrs.evolve(base, subscriber_buffer=buffer)
    f = node.fields(
        optional=(
            "queue_limit",
            "max_active_runs",
            "max_concurrent_nodes",
            "per_run_concurrency",
            "default_retries",
            "retry_backoff_ms",
            "node_timeout_ms",
            "run_retention",
        )
    )
    return EngineConfig(
        queue_limit=f.int("queue_limit", base.queue_limit, minimum=1),
        max_active_runs=f.int("max_active_runs", base.max_active_runs, minimum=1),
        max_concurrent_nodes=f.int("max_concurrent_nodes", base.max_concurrent_nodes, minimum=1),
        per_run_concurrency=f.int("per_run_concurrency", base.per_run_concurrency, minimum=1),
        default_retries=f.int("default_retries", base.default_retries, minimum=0),
        retry_backoff=f.float("retry_backoff_ms", base.retry_backoff * 1000, minimum=0) / 1000,
        node_timeout=f.float("node_timeout_ms", base.node_timeout * 1000, minimum=1) / 1000,
        subscriber_buffer=buffer,
    )


def _run_retention(node: Node | None, default: int) -> int:
    if node is None or not isinstance(node.value, dict) or "run_retention" not in node.value:
        return default
    return node.fields(optional=tuple(node.value)).int("run_retention", default, minimum=1)


@attrs.frozen
class FabricSeed:
    production: bool = False
    jwt_secret: str | None = attrs.field(default=None, repr=False)
    organizations: tuple[OrganizationSeed, ...] = ()
    catalog: Catalog = attrs.field(factory=Catalog)
    plane: PlaneConfig = attrs.field(factory=PlaneConfig)
    engine: EngineConfig = attrs.field(factory=EngineConfig)
    keepalive_seconds: float = 15.0

    @classmethod
    def from_node(cls, node: Node | None) -> FabricSeed:
        if node is None:
            return cls()
        f = node.fields(
            optional=(
                "production",
                "jwt_secret",
                "organizations",
                "providers",
                "prices",
                "executor",
                "events",
                "assets",
            )
        )
        org_nodes = f.list("organizations")
        orgs = tuple(OrganizationSeed.from_node(o) for o in org_nodes)
        check_unique(zip(org_nodes, (o.slug for o in orgs), strict=True), "organization slug")
        check_unique(zip(org_nodes, (o.id for o in orgs), strict=True), "organization id")
        key_places = [
            (Node(None, f"{o_node.path}.api_keys[{j}].key", o_node.source), key.key[:PREFIX_LENGTH])
            for o_node, org in zip(org_nodes, orgs, strict=True)
            for j, key in enumerate(org.api_keys)
        ]
        check_unique(key_places, "api key prefix")
        provider_nodes = f.list("providers")
        providers = tuple(provider_from_node(p) for p in provider_nodes)
        check_unique(
            zip(provider_nodes, (p.provider_id for p in providers), strict=True), "provider id"
        )
        known_models = {(ECHO.provider_id, m) for m in ECHO.models} | {
            (p.provider_id, m) for p in providers for m in p.models
        }
        model_owner: dict[str, str] = {}
        for p_node, provider in zip(provider_nodes, providers, strict=True):
            for model in provider.models:
                if model in model_owner or model in ECHO.models:
                    raise p_node.error(f"model {model!r} is already served by another provider")
                model_owner[model] = provider.provider_id
        price_nodes = f.list("prices")
        prices: dict[tuple[str, str], Price] = {}
        for p_node in price_nodes:
            seed = PriceSeed.from_node(p_node)
            if (seed.provider_id, seed.model) not in known_models:
                raise p_node.error(f"no provider {seed.provider_id!r} serves model {seed.model!r}")
            prices[(seed.provider_id, seed.model)] = seed.price
        events = f.get("events")
        ev = (
            None
            if events is None
            else events.fields(optional=("retention", "subscriber_buffer", "keepalive_seconds"))
        )
        assets = f.get("assets")
        af = (
            None
            if assets is None
            else assets.fields(optional=("max_asset_bytes", "max_total_bytes"))
        )
        base = PlaneConfig()
        secret_node = f.get("jwt_secret")
        secret = None if secret_node is None else secret_node.as_str()
        if secret is not None and len(secret.encode()) < 32:
            # RFC 7518 3.2: an HS256 key has at least 256 bits.
            raise f["jwt_secret"].error("must have at least 32 bytes (RFC 7518, HS256)")
        plane = PlaneConfig(
            production=f.bool("production", False),
            jwt_secret=secret,
            event_retention=base.event_retention
            if ev is None
            else ev.int("retention", base.event_retention, minimum=1),
            max_asset_bytes=base.max_asset_bytes
            if af is None
            else af.int("max_asset_bytes", base.max_asset_bytes, minimum=1),
            max_total_asset_bytes=base.max_total_asset_bytes
            if af is None
            else af.int("max_total_bytes", base.max_total_asset_bytes, minimum=1),
            run_retention=_run_retention(f.get("executor"), base.run_retention),
        )
        return cls(
            production=plane.production,
            jwt_secret=secret,
            organizations=orgs,
            catalog=Catalog((ECHO, *providers), prices),
            plane=plane,
            engine=_engine_config(f.get("executor"), events),
            keepalive_seconds=15.0
            if ev is None
            else ev.float("keepalive_seconds", 15.0, minimum=0.01),
        )


def populate(plane: ControlPlane, seed: FabricSeed) -> None:
    """Load the seeded tenants into a fresh plane (the default org already exists)."""
    now = plane.now()
    tenancy = plane.tenancy
    for org in seed.organizations:
        if org.id not in tenancy.organizations:
            tenancy.add_organization(org.slug, org.name, now, org_id=org.id)
        else:
            tenancy.organizations[org.id].name = org.name
        for member in org.members:
            tenancy.grant(member.principal_id, org.id, Role.parse(member.role), now)
        for team in org.teams:
            team_record = tenancy.add_team(org.id, team.slug, team.name, now, team_id=team.id)
            for member in team.members:
                tenancy.join_team(member.principal_id, team_record, Role.parse(member.role), now)
        for key in org.api_keys:
            key_record, _ = plane.keys.create(
                name=key.name,
                organization_id=org.id,
                principal_id=key.principal_id,
                scopes=key.scopes,
                now=now,
                raw=key.key,
                key_id=key.id,
            )
            if key.disabled:
                plane.keys.disable(key_record)


def seeded_key_names(seed: FabricSeed) -> Mapping[str, str]:
    """Key id -> name, for the banner (never the raw key)."""
    return {key.id: key.name for org in seed.organizations for key in org.api_keys}
