"""The `foundryops:` seed block: API keys, tiers, credits, callbacks, uploads and datasets.

Owns `FoundryOpsSeed` and its parts, each a frozen value built by a named constructor from a
seed `Node`, so every problem is one SeedError with its YAML path
(`foundryops.api_keys[1].tier: must be one of ...`). Dataset records are checked against their
schema here with the core's own coercion rules, so a seed that would reject rows fails at load.
Without a `foundryops:` block the service starts from `DEFAULT_SEED` (a development key and the
`dss_snapshot1` snapshot the source's examples use). Imports no YAML and nothing from trio or
quart.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..platform.seedschema import Node, check_unique
from .core.access import DEFAULT_TIERS, SCOPES, TierLimits
from .core.credits import OPERATIONS, CreditMode, Prices
from .core.datasets import check_rows
from .core.errors import InvalidSchema
from .core.generate import GENERATED_SCHEMA
from .core.schema import Schema
from .core.webhooks import DEFAULT_ALLOWED_HOSTS

MAX_GENERATED = 5_000_000


@attrs.frozen
class ApiKeySeed:
    key: str = attrs.field(repr=False)
    key_id: str
    scopes: tuple[str, ...]
    tier: str
    org: str | None

    @classmethod
    def from_node(cls, node: Node, index: int) -> ApiKeySeed:
        f = node.fields(required=("key",), optional=("id", "scopes", "tier", "org"))
        key = f.str("key")
        if len(key) < 8:
            raise f["key"].error("an API key must be at least 8 characters")
        scopes_node = f.get("scopes")
        scopes = (
            SCOPES
            if scopes_node is None
            else tuple(item.as_choice(SCOPES) for item in scopes_node.as_list())
        )
        return cls(
            key=key,
            key_id=f.str("id", f"key{index + 1}"),
            scopes=scopes,
            tier=f.str("tier", "growth"),
            org=f.opt_str("org"),
        )


@attrs.frozen
class CreditSeed:
    account_id: str  # "org:<name>" or "key:<id>"
    balance: float
    mode: CreditMode | None

    @classmethod
    def from_node(cls, node: Node) -> CreditSeed:
        f = node.fields(required=("balance",), optional=("org", "key_id", "mode"))
        if f.has("org") == f.has("key_id"):
            raise node.error("give exactly one of org or key_id")
        account = f"org:{f.str('org')}" if f.has("org") else f"key:{f.str('key_id')}"
        mode_node = f.get("mode")
        return cls(
            account_id=account,
            balance=f["balance"].as_float(),
            mode=None
            if mode_node is None
            else CreditMode(mode_node.as_choice([m.value for m in CreditMode])),
        )


@attrs.frozen
class DatasetSeed:
    dataset_id: str
    name: str
    schema: Schema
    snapshot_id: str | None
    active: bool
    records: tuple[tuple[object, ...], ...]
    generate: int
    generate_seed: int

    @classmethod
    def from_node(cls, node: Node) -> DatasetSeed:
        f = node.fields(
            required=("id", "name"),
            optional=("schema", "snapshot_id", "active", "records", "generate", "generate_seed"),
        )
        dataset_id = f.str("id")
        if not dataset_id.startswith("ds_"):
            raise f["id"].error("a dataset id starts with 'ds_'")
        snapshot_id = f.opt_str("snapshot_id")
        if snapshot_id is not None and not snapshot_id.startswith("dss_"):
            raise f["snapshot_id"].error("a snapshot id starts with 'dss_'")
        generate = f.int("generate", 0, minimum=0)
        if generate > MAX_GENERATED:
            raise f["generate"].error(f"at most {MAX_GENERATED} generated records")
        if generate and f.has("records"):
            raise node.error("give records or generate, not both")
        schema_node = f.get("schema")
        if generate:
            if schema_node is not None:
                raise schema_node.error(
                    "a generated dataset has the fixed schema company_name, domain, country"
                )
            schema = Schema.from_json(GENERATED_SCHEMA)
        else:
            if schema_node is None:
                raise node._child(None, "schema").error("required field is missing")
            try:
                schema = Schema.from_json(schema_node.as_json())
            except InvalidSchema as error:
                raise schema_node.error(error.message) from None
        rows: list[tuple[object, ...]] = []
        records = f.list("records")
        checked = check_rows(schema, [item.as_json() for item in records])
        if checked.rejected:
            index, _, reasons = checked.rejected[0]
            raise records[index].error(reasons[0].message)
        rows.extend(checked.rows)
        if not generate and not rows:
            raise node.error("a seeded dataset needs records (or generate: N)")
        return cls(
            dataset_id=dataset_id,
            name=f.str("name"),
            schema=schema,
            snapshot_id=snapshot_id,
            active=f.bool("active", True),
            records=tuple(rows),
            generate=generate,
            generate_seed=f.int("generate_seed", 14),
        )


@attrs.frozen
class FoundryOpsSeed:
    api_keys: tuple[ApiKeySeed, ...]
    tiers: dict[str, TierLimits]
    mode: CreditMode
    default_balance: float
    prices: Prices
    credits: tuple[CreditSeed, ...]
    callback_secret: str = attrs.field(repr=False)
    allowed_hosts: tuple[str, ...]
    upload_max_bytes: int
    upload_url_ttl: int
    max_body_bytes: int
    datasets: tuple[DatasetSeed, ...]

    @classmethod
    def from_node(cls, node: Node | None) -> FoundryOpsSeed:
        if node is None:
            return cls.from_node(Node(DEFAULT_SEED, "foundryops", "<built-in default>"))
        f = node.fields(
            optional=(
                "api_keys", "tiers", "mode", "default_balance", "prices", "credits",
                "callbacks", "uploads", "limits", "datasets",
            )
        )  # fmt: skip
        tiers = dict(DEFAULT_TIERS)
        tiers_node = f.get("tiers")
        for name, tier_node in tiers_node.as_items() if tiers_node else []:
            t = tier_node.fields(
                required=("requests_per_minute",),
                optional=("burst", "max_concurrent_jobs", "max_queued_jobs"),
            )
            rpm = t.int("requests_per_minute", 0, minimum=1)
            tiers[name] = TierLimits(
                name=name,
                requests_per_minute=rpm,
                burst=t.int("burst", max(rpm // 10, 1), minimum=1),
                max_concurrent_jobs=t.int("max_concurrent_jobs", 1, minimum=1),
                max_queued_jobs=t.int("max_queued_jobs", 4, minimum=0),
            )
        key_nodes = f.list("api_keys")
        keys = tuple(ApiKeySeed.from_node(item, i) for i, item in enumerate(key_nodes))
        check_unique(zip(key_nodes, (k.key for k in keys), strict=True), "API key")
        check_unique(zip(key_nodes, (k.key_id for k in keys), strict=True), "API key id")
        for item, key in zip(key_nodes, keys, strict=True):
            if key.tier not in tiers:
                raise item._child(key.tier, "tier").error(
                    f"must be one of {', '.join(sorted(tiers))}, got {key.tier!r}"
                )
        prices_node = f.get("prices")
        price_values: dict[str, float] = {}
        if prices_node is not None:
            pf = prices_node.fields(optional=OPERATIONS)
            for operation in OPERATIONS:
                if pf.has(operation):
                    price_values[operation] = pf.float(operation, 0.0, minimum=0.0)
        mode_node = f.get("mode")
        credit_nodes = f.list("credits")
        credits = tuple(CreditSeed.from_node(item) for item in credit_nodes)
        check_unique(zip(credit_nodes, (c.account_id for c in credits), strict=True), "account")
        known_ids = {k.key_id for k in keys}
        for item, credit in zip(credit_nodes, credits, strict=True):
            if credit.account_id.startswith("key:") and credit.account_id[4:] not in known_ids:
                raise item._child(None, "key_id").error(
                    f"no API key has the id {credit.account_id[4:]!r}"
                )
        callbacks = f.get("callbacks")
        cb = callbacks.fields(optional=("secret", "allowed_hosts")) if callbacks else None
        uploads = f.get("uploads")
        up = uploads.fields(optional=("max_bytes", "url_ttl_seconds")) if uploads else None
        limits = f.get("limits")
        lim = limits.fields(optional=("max_body_bytes",)) if limits else None
        dataset_nodes = f.list("datasets")
        datasets = tuple(DatasetSeed.from_node(item) for item in dataset_nodes)
        check_unique(zip(dataset_nodes, (d.dataset_id for d in datasets), strict=True), "dataset")
        snapshot_pairs = [(n, d.snapshot_id) for n, d in zip(dataset_nodes, datasets, strict=True)]
        check_unique(((n, s) for n, s in snapshot_pairs if s is not None), "snapshot id")
        secret = cb.str("secret", DEFAULT_CALLBACK_SECRET) if cb else DEFAULT_CALLBACK_SECRET
        return cls(
            api_keys=keys,
            tiers=tiers,
            mode=CreditMode.SHADOW
            if mode_node is None
            else CreditMode(mode_node.as_choice([m.value for m in CreditMode])),
            default_balance=f.float("default_balance", 1000.0),
            prices=Prices(**price_values),
            credits=credits,
            callback_secret=secret,
            allowed_hosts=cb.str_list("allowed_hosts", DEFAULT_ALLOWED_HOSTS)
            if cb
            else DEFAULT_ALLOWED_HOSTS,
            upload_max_bytes=up.int("max_bytes", 512 * 1024 * 1024, minimum=1)
            if up
            else 512 * 1024 * 1024,
            upload_url_ttl=up.int("url_ttl_seconds", 900, minimum=1) if up else 900,
            max_body_bytes=lim.int("max_body_bytes", 512 * 1024, minimum=1024)
            if lim
            else 512 * 1024,
            datasets=datasets,
        )

    def describe(self) -> dict[str, Any]:
        """A secret-free summary (no keys, no callback secret)."""
        return {
            "api_keys": [
                {"id": k.key_id, "tier": k.tier, "scopes": list(k.scopes), "org": k.org}
                for k in self.api_keys
            ],
            "mode": self.mode.value,
            "datasets": [d.dataset_id for d in self.datasets],
        }


# A development secret: only for the built-in default seed, which is for local use.
DEFAULT_CALLBACK_SECRET = "whsec_foundryops_emulator_dev"
DEFAULT_SEED: dict[str, Any] = {
    "api_keys": [
        {
            "key": "fo_test_key_0001",
            "id": "dev",
            "scopes": list(SCOPES),
            "tier": "enterprise",
        }
    ],
    "datasets": [
        {
            "id": "ds_demo",
            "name": "Demo accounts",
            "snapshot_id": "dss_snapshot1",
            "schema": {"company_name": "string", "domain": "string", "country": "string"},
            "records": [
                {"company_name": "Acme Inc", "domain": "acme.com", "country": "US"},
                {"company_name": "Acme Corporation", "domain": "acmecorp.com", "country": "US"},
                {"company_name": "Globex Corp", "domain": "globex.com", "country": "US"},
                {"company_name": "Initech LLC", "domain": "initech.com", "country": "US"},
                {"company_name": "Umbrella GmbH", "domain": "umbrella.de", "country": "DE"},
                {
                    "company_name": "Stark Industries",
                    "domain": "starkindustries.com",
                    "country": "US",
                },
            ],
        }
    ],
}
