"""The public REST routes of the runtime platform, at `/runtime/...` and `/v1/runtime/...`.

Owns the nine routes of the source's table plus two verb sub-paths the source's conventions imply
(`POST .../deployments/{id}/rollback`, `POST .../secret-bindings/{id}/rotate`), and the
`cs-schema-version` header on every answer of the service (an after-request hook on its app).
Each handler checks the bearer token and the route's scope before it reads the body, then lets
the engine run the core call; domain errors propagate to `ProblemFamily.translate`. The three
hot reads are raw routes (`read_routes`); the rest are a Quart blueprint.
Imports quart, the engine and the core; nothing from hypercorn or yaml.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from quart import Blueprint, Response, request

from ...web.http import json_response, parse_json, read_body
from ...web.rawasgi import RawRequest, RawRoute, with_automatic_methods
from ..core.access import Caller, decide
from . import serializers
from .auth import caller_from
from .errors import PROBLEMS, SCHEMA_HEADER, SCHEMA_VERSION

if TYPE_CHECKING:
    from ..instance import ConnectSoftInstance

PREFIXES = ("/runtime", "/v1/runtime")
JSON_TYPES = ("application/json", "")
# Bodies of the runtime API are small; a larger one is refused before it is read.
MAX_BODY_BYTES = 256 * 1024

View = Callable[..., Awaitable[Response]]


def rest_blueprint(instance: ConnectSoftInstance) -> Blueprint:
    blueprint = Blueprint("connectsoft_runtime", __name__)
    settings = instance.context.settings
    body_limit = min(settings.max_body_bytes, MAX_BODY_BYTES)

    def route(method: str, path: str) -> Callable[[View], View]:
        def register(view: View) -> View:
            for prefix in PREFIXES:
                endpoint = f"{view.__name__}{prefix.replace('/', '_')}"
                blueprint.add_url_rule(prefix + path, endpoint, view, methods=[method])
            return view

        return register

    def authorize(scope: str) -> Caller:
        """401 without a valid token, 403 without the scope: before the body is looked at."""
        engine = instance.engine
        caller = caller_from(request.headers.get("Authorization"), instance.issuer, engine.now())
        decide(caller, scope, None).raise_if_refused()
        return caller

    async def body(*, optional: bool = False) -> Any:
        if request.mimetype not in JSON_TYPES:
            raise PROBLEMS.error(
                415, "UnsupportedMediaType", "The request body must be application/json."
            )
        data = await read_body(PROBLEMS, body_limit, settings.body_timeout)
        if optional and not data.strip():
            return None
        return parse_json(data, PROBLEMS, "InvalidRequest")

    @blueprint.after_app_request
    async def schema_version(response: Response) -> Response:
        response.headers[SCHEMA_HEADER] = SCHEMA_VERSION
        return response

    @route("POST", "/environments")
    async def provision_environment() -> Response:
        """Provision a new runtime environment."""
        caller = authorize("runtime.environments.write")
        data = await body()
        engine = instance.engine
        env = engine.call(lambda now: engine.state.provision(caller, data, now))
        return json_response(serializers.provisioned(env), 202)

    @route("POST", "/deployments")
    async def create_deployment() -> Response:
        """Deploy generated workloads into an environment."""
        caller = authorize("runtime.deployments.write")
        data = await body()
        engine = instance.engine
        deployment = engine.call(lambda now: engine.state.create_deployment(caller, data, now))
        return json_response(serializers.deployment_accepted(deployment), 202)

    @route("GET", "/deployments/<deployment_id>")
    async def get_deployment(deployment_id: str) -> Response:
        """Get deployment status and rollout history."""
        caller = authorize("runtime.deployments.read")
        engine = instance.engine
        deployment = engine.read(lambda: engine.state.get_deployment(caller, deployment_id))
        return json_response(serializers.deployment(deployment))

    @route("POST", "/deployments/<deployment_id>/rollback")
    async def rollback_deployment(deployment_id: str) -> Response:
        """Trigger a rollback of a deployment still in progress (emulator: verb sub-path)."""
        caller = authorize("runtime.deployments.write")
        engine = instance.engine
        deployment = engine.call(
            lambda now: engine.state.rollback_deployment(caller, deployment_id, now)
        )
        return json_response(serializers.deployment_accepted(deployment), 202)

    @route("POST", "/configurations")
    async def publish_configuration() -> Response:
        """Publish a versioned runtime configuration."""
        caller = authorize("runtime.configurations.write")
        data = await body()
        engine = instance.engine
        record = engine.call(lambda now: engine.state.publish_configuration(caller, data, now))
        trace = engine.state.environments[record.environment_id].trace_id
        return json_response(serializers.configuration(record, trace), 201)

    @route("POST", "/secret-bindings")
    async def bind_secrets() -> Response:
        """Bind a workload to Key Vault secrets (names and references only)."""
        caller = authorize("runtime.secrets.write")
        data = await body()
        engine = instance.engine
        binding = engine.call(lambda now: engine.state.bind_secrets(caller, data, now))
        trace = engine.state.environments[binding.environment_id].trace_id
        return json_response(serializers.secret_binding(binding, trace), 201)

    @route("POST", "/secret-bindings/<binding_id>/rotate")
    async def rotate_secrets(binding_id: str) -> Response:
        """Request rotation of a binding's secrets (emulator: verb sub-path)."""
        caller = authorize("runtime.secrets.write")
        data = await body(optional=True)
        engine = instance.engine
        binding, items = engine.call(
            lambda now: engine.state.request_rotation(caller, binding_id, data, now)
        )
        return json_response(serializers.rotations(binding, items), 202)

    @route("POST", "/scaling-policies")
    async def apply_scaling_policy() -> Response:
        """Apply a scaling policy to a service."""
        caller = authorize("runtime.scaling.write")
        data = await body()
        engine = instance.engine
        env, policy = engine.call(lambda now: engine.state.apply_scaling(caller, data, now))
        return json_response(serializers.scaling_applied(env, policy), 201)

    return blueprint


def read_routes(instance: ConnectSoftInstance) -> list[RawRoute]:
    """The three hot reads (environment, health, drift) as raw routes at both prefixes: a
    Quart request costs more than the read itself. HEAD and OPTIONS as Quart answers them;
    errors propagate to the problem family, which adds the schema header."""
    schema = [(SCHEMA_HEADER.lower().encode("latin-1"), SCHEMA_VERSION.encode("latin-1"))]

    def authorize(raw: RawRequest, scope: str) -> Caller:
        engine = instance.engine
        caller = caller_from(raw.header(b"authorization"), instance.issuer, engine.now())
        decide(caller, scope, None).raise_if_refused()
        return caller

    async def get_environment(raw: RawRequest) -> None:
        caller = authorize(raw, "runtime.environments.read")
        environment_id = raw.params["environment_id"]
        engine = instance.engine
        env = engine.read(lambda: engine.state.get_environment(caller, environment_id))
        await raw.respond_json(200, serializers.environment(env), schema)

    async def service_health(raw: RawRequest) -> None:
        caller = authorize(raw, "runtime.health.read")
        service_id = raw.params["service_id"]
        environment_id = _query_value(raw, "environmentId")
        engine = instance.engine
        service = engine.read(lambda: engine.state.health(caller, service_id, environment_id))
        await raw.respond_json(200, serializers.health(service), schema)

    async def drift_findings(raw: RawRequest) -> None:
        caller = authorize(raw, "runtime.drift.read")
        environment_id = raw.params["environment_id"]
        engine = instance.engine
        env, findings = engine.read(lambda: engine.state.drift(caller, environment_id))
        await raw.respond_json(200, serializers.drift(env, findings), schema)

    routes = []
    for prefix in PREFIXES:
        routes += [
            RawRoute(
                "GET",
                prefix + "/environments/{environment_id}",
                get_environment,
                "Get environment state and inventory.",
            ),
            RawRoute(
                "GET",
                prefix + "/services/{service_id}/health",
                service_health,
                "Get the latest health result for a service.",
            ),
            RawRoute(
                "GET",
                prefix + "/drift/{environment_id}",
                drift_findings,
                "List drift findings for an environment.",
            ),
        ]
    return with_automatic_methods(routes)


def _query_value(raw: RawRequest, name: str) -> str | None:
    """The first non-empty value of a query parameter (as Quart's `args.get(...) or None`)."""
    query = bytes(raw.scope.get("query_string") or b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            return value or None
    return None
