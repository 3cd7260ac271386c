"""The Ontologies API blueprint: list and get ontologies, execute seeded queries.

Owns `GET /api/v2/ontologies` (with `pageSize`/`pageToken` paging, an emulator extension:
Foundry's list returns everything), `GET /api/v2/ontologies/{ontology}` and
`POST /api/v2/ontologies/{ontology}/queries/{queryApiName}/execute`, whose answer is
`{"value": <the seeded result>}`, plus the serializers. `{ontology}` is a RID or an API name.
Unknown query parameters (`preview`, `version`, `branch`, `sdkPackageRid`, `sdkVersion`,
`transactionId`, ...) are accepted and ignored.

Imports quart and the core; nothing from hypercorn or yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from ...web.http import json_response, parse_json, read_body
from ..core.ontologies import Ontology
from .errors import FOUNDRY_API

if TYPE_CHECKING:
    from ..service import FoundryInstance

READ_SCOPE = "api:ontologies-read"


def ontology_to_json(ontology: Ontology) -> dict[str, Any]:
    return {
        "rid": ontology.rid,
        "apiName": ontology.api_name,
        "displayName": ontology.display_name,
        "description": ontology.description,
    }


def parse_page_size(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise FOUNDRY_API.error(
            400,
            "InvalidPageSize",
            f"pageSize must be a positive integer, got {raw!r}.",
            parameters={"pageSize": raw},
        ) from None


def query_parameters(data: Any) -> dict[str, Any]:
    """The `parameters` of an ExecuteQueryRequest body; a missing field means none."""
    if not isinstance(data, dict):
        raise FOUNDRY_API.error(
            400,
            "InvalidRequestBody",
            'The request body must be a JSON object like {"parameters": {...}}.',
            parameters={"propertyName": "requestBody", "expected": "a JSON object"},
        )
    parameters = data.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise FOUNDRY_API.error(
            400,
            "InvalidRequestBody",
            "parameters must be a JSON object of parameter names to values.",
            parameters={"propertyName": "parameters", "expected": "a JSON object"},
        )
    return parameters


def ontologies_blueprint(instance: FoundryInstance) -> Blueprint:
    blueprint = Blueprint("foundry_ontologies", __name__, url_prefix="/api/v2/ontologies")

    def authorize(denied: str, parameters: dict[str, Any] | None = None) -> None:
        # `instance.auth` is looked up per request: reset() replaces it with a fresh one.
        instance.auth.require(FOUNDRY_API, scope=READ_SCOPE, denied=denied, parameters=parameters)

    @blueprint.get("")
    async def list_ontologies() -> Response:
        authorize("ListOntologiesPermissionDenied")
        page_size = parse_page_size(request.args.get("pageSize"))
        page = instance.ontologies.page(page_size, request.args.get("pageToken"))
        body: dict[str, Any] = {"data": [ontology_to_json(o) for o in page.data]}
        if page.next_page_token is not None:
            body["nextPageToken"] = page.next_page_token
        return json_response(body)

    @blueprint.get("/<ontology>")
    async def get_ontology(ontology: str) -> Response:
        authorize("GetOntologyPermissionDenied", {"ontology": ontology})
        found = instance.ontologies.resolve(ontology)
        return json_response(ontology_to_json(found))

    @blueprint.post("/<ontology>/queries/<query_api_name>/execute")
    async def execute_query(ontology: str, query_api_name: str) -> Response:
        authorize(
            "ExecuteQueryPermissionDenied", {"ontology": ontology, "queryApiName": query_api_name}
        )
        # An unknown ontology or query is reported before a bad body.
        found = instance.ontologies.resolve(ontology)
        query = found.query(query_api_name)
        settings = instance.context.settings
        data = await read_body(FOUNDRY_API, settings.max_body_bytes, settings.body_timeout)
        parameters = (
            query_parameters(parse_json(data, FOUNDRY_API, "InvalidRequestBody"))
            if data.strip()
            else {}
        )
        value = query.evaluate(parameters, found.api_name)
        return json_response({"value": value})

    return blueprint
