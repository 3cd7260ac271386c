"""The `foundry:` seed block: frozen values for users, OAuth clients, enrollment, connections,
ontologies and compute modules, each built by a named constructor from a seed `Node`.

Owns the Foundry seed schema, its defaults and its cross-checks (duplicates, RID syntax,
tokens naming known users). Every problem is one SeedError with the YAML path. Imports no
YAML and nothing from trio, quart or hypercorn (the core builds its state from these values).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from ..platform.seedschema import Node, check_unique

RID_PATTERN = re.compile(
    r"^ri\.[a-z][a-z0-9-]*\.([a-z0-9][a-z0-9\-]*)?\.[a-z][a-z0-9-]*\.[a-zA-Z0-9._-]+$"
)
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_REALM = "palantir-internal-realm"
DEFAULT_ORGANIZATION = "ri.organization.main.organization.default"
DEFAULT_ENROLLMENT_RID = "ri.enrollment..enrollment.default"
# Ids the seed does not give are derived from names, so they survive restarts.
_ID_NAMESPACE = uuid.UUID("6f0b8b2e-3c1d-4f57-9a55-8d1b3f0e2a10")


class PrincipalType(enum.Enum):
    """A person (shown on the sign-in page) or a service (a client-credentials client)."""

    HUMAN = "human"
    SERVICE = "service"


class OnRestart(enum.Enum):
    """What a module's restart notification does with the jobs it had taken."""

    FAIL = "fail"
    REQUEUE = "requeue"


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


def _rid(node: Node) -> str:
    text = node.as_str()
    if not RID_PATTERN.fullmatch(text):
        raise node.error(
            f"{text!r} is not a resource identifier (ri.<service>.<instance>.<type>.<locator>)"
        )
    return text


def _optional_text(node: Node | None) -> str:
    return "" if node is None else node.as_str(allow_empty=True)


def _opt_rid(node: Node | None) -> str | None:
    return None if node is None else _rid(node)


@attrs.frozen
class UserSeed:
    username: str
    id: str
    display_name: str
    email: str | None
    given_name: str | None
    family_name: str | None
    realm: str
    organization_rid: str | None
    principal_type: PrincipalType
    active: bool
    oauth_client_id: str | None
    attributes: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_node(cls, node: Node) -> UserSeed:
        f = node.fields(
            required=("username",),
            optional=(
                "id",
                "display_name",
                "email",
                "given_name",
                "family_name",
                "realm",
                "organization_rid",
                "principal_type",
                "active",
                "oauth_client_id",
                "attributes",
            ),
        )
        username = f.str("username")
        if any(ch.isspace() for ch in username):
            raise f["username"].error("a username must not contain spaces")
        user_id = f.opt_str("id")
        if user_id is not None:
            try:
                user_id = str(uuid.UUID(user_id))
            except ValueError:
                raise f["id"].error("must be a UUID (8-4-4-4-12 hex digits)") from None
        principal_node = f.get("principal_type")
        principal_type = (
            PrincipalType.HUMAN
            if principal_node is None
            else PrincipalType(principal_node.as_choice(m.value for m in PrincipalType))
        )
        attributes: dict[str, tuple[str, ...]] = {}
        attribute_node = f.get("attributes")
        for key, value in attribute_node.as_items() if attribute_node else []:
            attributes[key] = (
                (value.as_str(allow_empty=True),)
                if isinstance(value.value, str)
                else value.as_str_list()
            )
        org_node = f.get("organization_rid")
        return cls(
            username=username,
            id=user_id or stable_uuid("user", username),
            display_name=f.str("display_name", username),
            email=f.opt_str("email"),
            given_name=f.opt_str("given_name"),
            family_name=f.opt_str("family_name"),
            realm=f.str("realm", DEFAULT_REALM),
            organization_rid=(
                (DEFAULT_ORGANIZATION if principal_type is PrincipalType.HUMAN else None)
                if org_node is None
                else _rid(org_node)
            ),
            principal_type=principal_type,
            active=f.bool("active", True),
            oauth_client_id=f.opt_str("oauth_client_id"),
            attributes=attributes,
        )


@attrs.frozen
class OAuthClientSeed:
    client_id: str
    # None makes a public client (authorization code with PKCE, no secret).
    client_secret: str | None
    name: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    allowed_scopes: tuple[str, ...]

    @classmethod
    def from_node(cls, node: Node) -> OAuthClientSeed:
        f = node.fields(
            required=("client_id",),
            optional=("client_secret", "name", "redirect_uris", "grant_types", "allowed_scopes"),
        )
        client_id = f.str("client_id")
        grants_node = f.get("grant_types")
        grants = (
            GRANT_TYPES
            if grants_node is None
            else tuple(item.as_choice(GRANT_TYPES) for item in grants_node.as_list())
        )
        uris = f.str_list("redirect_uris")
        for item in f.list("redirect_uris"):
            if not item.as_str().startswith(("http://", "https://")) and ":" not in item.as_str():
                raise item.error("a redirect URI must be an absolute URL")
        secret = f.opt_str("client_secret")
        if "client_credentials" in grants and secret is None:
            raise node.error("a client with the client_credentials grant needs a client_secret")
        return cls(
            client_id=client_id,
            client_secret=secret,
            name=f.str("name", client_id),
            redirect_uris=uris,
            grant_types=grants,
            allowed_scopes=f.str_list("allowed_scopes"),
        )


@attrs.frozen
class OAuthSettingsSeed:
    access_token_ttl: int = 3600
    code_ttl: int = 600
    # None: refresh tokens live until used (each use rotates them) or revoked.
    refresh_token_ttl: int | None = None

    @classmethod
    def from_node(cls, node: Node | None) -> OAuthSettingsSeed:
        if node is None:
            return cls()
        f = node.fields(optional=("access_token_ttl", "code_ttl", "refresh_token_ttl"))
        refresh = f.get("refresh_token_ttl")
        return cls(
            access_token_ttl=f.int("access_token_ttl", 3600, minimum=1),
            code_ttl=f.int("code_ttl", 600, minimum=1),
            refresh_token_ttl=None if refresh is None else refresh.as_int(minimum=1),
        )


@attrs.frozen
class EnrollmentSeed:
    rid: str = DEFAULT_ENROLLMENT_RID
    name: str = "Default Enrollment"
    # ISO-8601 with a time zone; None means "when the emulator started".
    created_time: str | None = None

    @classmethod
    def from_node(cls, node: Node | None) -> EnrollmentSeed:
        if node is None:
            return cls()
        f = node.fields(optional=("rid", "name", "created_time"))
        created = f.get("created_time")
        created_text = None if created is None else str(created.value)
        if created is not None and not re.search(r"(Z|[+-]\d\d:?\d\d)$", created_text or ""):
            raise created.error(
                "must be an ISO-8601 time with a time zone, e.g. 2024-01-01T00:00:00Z"
            )
        return cls(
            rid=_opt_rid(f.get("rid")) or DEFAULT_ENROLLMENT_RID,
            name=f.str("name", "Default Enrollment"),
            created_time=created_text,
        )


@attrs.frozen
class DomainSeed:
    host: str
    port: int | None
    scheme: str | None  # "HTTP" or "HTTPS"
    # The Foundry REST auth object as written (secret values in it are never returned).
    auth: Mapping[str, Any] | None

    @classmethod
    def from_node(cls, node: Node) -> DomainSeed:
        f = node.fields(required=("host",), optional=("port", "scheme", "auth"))
        port = f.get("port")
        scheme = f.get("scheme")
        auth = f.get("auth")
        if auth is not None and not isinstance(auth.value, dict):
            raise auth.error("expected a mapping (a Foundry REST auth object)")
        return cls(
            host=f.str("host"),
            port=None if port is None else port.as_int(minimum=1),
            scheme=None if scheme is None else scheme.as_choice(("HTTP", "HTTPS")),
            auth=None if auth is None else auth.as_json(),
        )


@attrs.frozen
class ConnectionSeed:
    rid: str
    display_name: str
    parent_folder_rid: str
    domains: tuple[DomainSeed, ...]
    oauth2_client_rid: str | None
    # Additional secrets by name. Values are kept, never shown.
    secrets: Mapping[str, str]
    network_egress_policy_rids: tuple[str, ...] | None

    @classmethod
    def from_node(cls, node: Node) -> ConnectionSeed:
        f = node.fields(
            required=("display_name", "parent_folder_rid"),
            optional=(
                "rid",
                "domains",
                "oauth2_client_rid",
                "secrets",
                "network_egress_policy_rids",
            ),
        )
        display_name = f.str("display_name")
        secrets_node = f.get("secrets")
        egress = f.get("network_egress_policy_rids")
        return cls(
            rid=_opt_rid(f.get("rid"))
            or f"ri.magritte..source.{stable_uuid('connection', display_name)}",
            display_name=display_name,
            parent_folder_rid=_rid(f["parent_folder_rid"]),
            domains=tuple(DomainSeed.from_node(item) for item in f.list("domains")),
            oauth2_client_rid=f.opt_str("oauth2_client_rid"),
            secrets={
                key: value.as_str(allow_empty=True)
                for key, value in (secrets_node.as_items() if secrets_node else [])
            },
            network_egress_policy_rids=None
            if egress is None
            else tuple(_rid(i) for i in egress.as_list()),
        )


@attrs.frozen
class QueryCaseSeed:
    # The case matches when every key given here equals the request's parameter of that name.
    parameters: Mapping[str, Any]
    result: Any

    @classmethod
    def from_node(cls, node: Node) -> QueryCaseSeed:
        f = node.fields(required=("parameters", "result"))
        parameters = f["parameters"]
        if not isinstance(parameters.value, dict):
            raise parameters.error("expected a mapping of parameter names to values")
        return cls(parameters=parameters.as_json(), result=f["result"].as_json())


@attrs.frozen
class QuerySeed:
    api_name: str
    cases: tuple[QueryCaseSeed, ...]
    # The answer when no case matches (the simple form has only this). None: no default.
    has_default: bool
    default: Any

    @classmethod
    def from_node(cls, node: Node) -> QuerySeed:
        f = node.fields(required=("api_name",), optional=("result", "cases"))
        cases = tuple(QueryCaseSeed.from_node(item) for item in f.list("cases"))
        has_default = f.has("result")
        if not cases and not has_default:
            raise node.error("a query needs a result, cases, or both")
        return cls(
            api_name=f.str("api_name"),
            cases=cases,
            has_default=has_default,
            default=f["result"].as_json() if has_default else None,
        )


@attrs.frozen
class OntologySeed:
    rid: str
    api_name: str
    display_name: str
    description: str
    queries: tuple[QuerySeed, ...]

    @classmethod
    def from_node(cls, node: Node) -> OntologySeed:
        f = node.fields(
            required=("api_name",), optional=("rid", "display_name", "description", "queries")
        )
        api_name = f.str("api_name")
        query_nodes = f.list("queries")
        queries = tuple(QuerySeed.from_node(item) for item in query_nodes)
        check_unique(zip(query_nodes, (q.api_name for q in queries), strict=True), "query api_name")
        return cls(
            rid=_opt_rid(f.get("rid"))
            or f"ri.ontology.main.ontology.{stable_uuid('ontology', api_name)}",
            api_name=api_name,
            display_name=f.str("display_name", api_name),
            description=_optional_text(f.get("description")),
            queries=queries,
        )


@attrs.frozen
class RuntimeSeed:
    runtime_id: str
    # None: the emulator makes one at start (`foundry-emulator module env` prints it).
    module_auth_token: str | None
    # What the restart notification does with jobs the module had taken.
    on_restart: OnRestart = OnRestart.FAIL

    @classmethod
    def from_node(cls, node: Node) -> RuntimeSeed:
        f = node.fields(required=("runtime_id",), optional=("module_auth_token", "on_restart"))
        token = f.get("module_auth_token")
        if token is not None and (any(ch.isspace() for ch in token.as_str())):
            raise token.error("a module auth token must not contain spaces or newlines")
        restart = f.get("on_restart")
        return cls(
            runtime_id=f.str("runtime_id"),
            module_auth_token=None if token is None else token.as_str(),
            on_restart=(
                OnRestart.FAIL
                if restart is None
                else OnRestart(restart.as_choice(m.value for m in OnRestart))
            ),
        )


@attrs.frozen
class DeployedAppSeed:
    deployed_app_rid: str
    branch: str
    runtime_id: str
    display_name: str
    active: bool

    @classmethod
    def from_node(cls, node: Node) -> DeployedAppSeed:
        f = node.fields(
            required=("deployed_app_rid", "runtime_id"),
            optional=("branch", "display_name", "active"),
        )
        rid = _rid(f["deployed_app_rid"])
        return cls(
            deployed_app_rid=rid,
            branch=f.str("branch", "master"),
            runtime_id=f.str("runtime_id"),
            display_name=f.str("display_name", rid),
            active=f.bool("active", True),
        )


@attrs.frozen
class JobLimitsSeed:
    """Compute-module job plane timings and bounds (seconds and counts)."""

    # How long a runtime's GET .../job is held open when there is no job (then 204).
    poll_timeout: float = 20.0
    # How long a synchronous execute waits for the whole result before 504 job_timeout.
    execute_timeout: float = 300.0
    # How long a dispatched job may run without a result before it is failed.
    job_timeout: float = 600.0
    # Jobs waiting per deployed app before submits get 429.
    queue_depth: int = 1000
    # How long finished jobs and their results are kept, and how many at most.
    retention_seconds: float = 900.0
    max_retained_jobs: int = 10000
    # Largest result the emulator keeps for later fetches (bytes); larger ones stream through only.
    max_retained_result_bytes: int = 64 * 1024 * 1024
    # Largest result kept when it was streamed to a waiting synchronous caller, which already has
    # it (bytes; the smaller of this and max_retained_result_bytes applies). Results nobody waited
    # for (async jobs, callers gone before the first byte) keep max_retained_result_bytes.
    max_retained_streamed_result_bytes: int = 1024 * 1024
    # How long a job may wait for a runtime to take it before it is cancelled (async jobs; a
    # synchronous caller's own execute_timeout usually ends its job first).
    queue_timeout: float = 600.0
    # All kept results together (bytes); beyond it the oldest finished jobs are forgotten early.
    max_retained_total_bytes: int = 256 * 1024 * 1024

    @classmethod
    def from_node(cls, node: Node | None) -> JobLimitsSeed:
        if node is None:
            return cls()
        d = cls()
        f = node.fields(optional=[field.name for field in attrs.fields(cls)])
        return cls(
            poll_timeout=f.float("poll_timeout", d.poll_timeout, minimum=0.01),
            execute_timeout=f.float("execute_timeout", d.execute_timeout, minimum=0.01),
            job_timeout=f.float("job_timeout", d.job_timeout, minimum=0.01),
            queue_depth=f.int("queue_depth", d.queue_depth, minimum=1),
            retention_seconds=f.float("retention_seconds", d.retention_seconds, minimum=0),
            max_retained_jobs=f.int("max_retained_jobs", d.max_retained_jobs, minimum=1),
            max_retained_result_bytes=f.int(
                "max_retained_result_bytes", d.max_retained_result_bytes, minimum=0
            ),
            max_retained_streamed_result_bytes=f.int(
                "max_retained_streamed_result_bytes",
                d.max_retained_streamed_result_bytes,
                minimum=0,
            ),
            queue_timeout=f.float("queue_timeout", d.queue_timeout, minimum=0.01),
            max_retained_total_bytes=f.int(
                "max_retained_total_bytes", d.max_retained_total_bytes, minimum=0
            ),
        )


@attrs.frozen
class ComputeModulesSeed:
    runtimes: tuple[RuntimeSeed, ...] = ()
    deployed_apps: tuple[DeployedAppSeed, ...] = ()
    limits: JobLimitsSeed = JobLimitsSeed()

    @classmethod
    def from_node(cls, node: Node | None) -> ComputeModulesSeed:
        if node is None:
            return cls()
        f = node.fields(optional=("runtimes", "deployed_apps", "limits"))
        runtime_nodes = f.list("runtimes")
        runtimes = [RuntimeSeed.from_node(item) for item in runtime_nodes]
        check_unique(
            zip(runtime_nodes, (r.runtime_id for r in runtimes), strict=True), "runtime_id"
        )
        app_nodes = f.list("deployed_apps")
        apps = tuple(DeployedAppSeed.from_node(item) for item in app_nodes)
        check_unique(
            zip(app_nodes, ((a.deployed_app_rid, a.branch) for a in apps), strict=True),
            "deployed app and branch",
        )
        # A deployed app naming a runtime that is not listed creates that runtime.
        known = {runtime.runtime_id for runtime in runtimes}
        for app in apps:
            if app.runtime_id not in known:
                runtimes.append(RuntimeSeed(runtime_id=app.runtime_id, module_auth_token=None))
                known.add(app.runtime_id)
        return cls(
            runtimes=tuple(runtimes),
            deployed_apps=apps,
            limits=JobLimitsSeed.from_node(f.get("limits")),
        )


@attrs.frozen
class TokenSeed:
    """A ready-made bearer token from the top-level `tokens:` block (each names a Foundry user)."""

    token: str
    username: str
    scopes: tuple[str, ...]
    # Seconds until the token stops working; None means it never expires.
    expires_in: int | None
    # Where the token's entry is (for cross-checks made by a service).
    path: str
    source: str

    @classmethod
    def from_node(cls, token: str, node: Node) -> TokenSeed:
        # `login` is the prior emulator's name for the field; both are accepted.
        fields = node.fields(optional=("username", "login", "scopes", "expires_in"))
        if fields.has("username") == fields.has("login"):
            raise node.error("give exactly one of username or login")
        username = fields.str("username") if fields.has("username") else fields.str("login")
        expires = fields.get("expires_in")
        return cls(
            token=token,
            username=username,
            scopes=fields.str_list("scopes"),
            expires_in=None if expires is None else expires.as_int(minimum=1),
            path=node.path,
            source=node.source,
        )


def read_tokens(node: Node | None) -> tuple[TokenSeed, ...]:
    """The top-level `tokens:` block: token -> principal and scopes."""
    if node is None:
        return ()
    items = node.as_items()
    tokens = tuple(TokenSeed.from_node(token, entry) for token, entry in items)
    for token_seed, (_, entry) in zip(tokens, items, strict=True):
        if not token_seed.token.strip() or any(ch.isspace() for ch in token_seed.token):
            raise entry.error("a token must be a non-empty string without spaces")
    check_unique(((Node(None, t.path, t.source), t.token) for t in tokens), "token")
    return tokens


@attrs.frozen
class FoundrySeed:
    users: tuple[UserSeed, ...] = ()
    oauth_clients: tuple[OAuthClientSeed, ...] = ()
    oauth: OAuthSettingsSeed = OAuthSettingsSeed()
    enrollment: EnrollmentSeed = EnrollmentSeed()
    connections: tuple[ConnectionSeed, ...] = ()
    ontologies: tuple[OntologySeed, ...] = ()
    compute_modules: ComputeModulesSeed = ComputeModulesSeed()
    tokens: tuple[TokenSeed, ...] = ()

    @classmethod
    def from_node(cls, node: Node | None, tokens: tuple[TokenSeed, ...] = ()) -> FoundrySeed:
        if node is None:
            seed = cls()
        else:
            f = node.fields(
                optional=(
                    "users",
                    "oauth_clients",
                    "oauth",
                    "enrollment",
                    "connections",
                    "ontologies",
                    "compute_modules",
                )
            )
            user_nodes = f.list("users")
            users = tuple(UserSeed.from_node(item) for item in user_nodes)
            check_unique(zip(user_nodes, (u.username for u in users), strict=True), "username")
            check_unique(zip(user_nodes, (u.id for u in users), strict=True), "user id")
            client_nodes = f.list("oauth_clients")
            clients = tuple(OAuthClientSeed.from_node(item) for item in client_nodes)
            check_unique(
                zip(client_nodes, (c.client_id for c in clients), strict=True), "client_id"
            )
            connection_nodes = f.list("connections")
            connections = tuple(ConnectionSeed.from_node(item) for item in connection_nodes)
            check_unique(
                zip(connection_nodes, (c.rid for c in connections), strict=True), "connection rid"
            )
            ontology_nodes = f.list("ontologies")
            ontologies = tuple(OntologySeed.from_node(item) for item in ontology_nodes)
            check_unique(
                zip(ontology_nodes, (o.api_name for o in ontologies), strict=True),
                "ontology api_name",
            )
            check_unique(
                zip(ontology_nodes, (o.rid for o in ontologies), strict=True), "ontology rid"
            )
            seed = cls(
                users=users,
                oauth_clients=clients,
                oauth=OAuthSettingsSeed.from_node(f.get("oauth")),
                enrollment=EnrollmentSeed.from_node(f.get("enrollment")),
                connections=connections,
                ontologies=ontologies,
                compute_modules=ComputeModulesSeed.from_node(f.get("compute_modules")),
            )
        usernames = {user.username for user in seed.users}
        for token in tokens:
            if token.username not in usernames:
                raise Node(None, f"{token.path}.username", token.source).error(
                    f"token names user {token.username!r}, who is not in foundry.users"
                )
        return attrs.evolve(seed, tokens=tokens)

    def user(self, username: str) -> UserSeed | None:
        return next((user for user in self.users if user.username == username), None)
