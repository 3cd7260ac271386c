"""Ontologies and their seeded queries: lookup by RID or API name, paging, query execution.

Owns `Ontologies` (every seeded ontology in seed order), `Ontology`, `Query` and the matching
of a query's request parameters against its seeded cases: a case matches when every parameter
it names is present in the request with an equal JSON value (parameters the case does not name
are ignored); the first matching case wins, then the query's default result; with neither,
`NoMatchingQueryCase` names the query and the parameters. A query's result is the `value` of
the answer: the API wraps it as `{"value": <result>}`.

Imports nothing from trio, quart, hypercorn or yaml; no JSON rendering (see api/ontologies.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..seed import RID_PATTERN, OntologySeed, QuerySeed
from .errors import InvalidArgument, NotFound

# The largest page `GET /api/v2/ontologies` returns; larger pageSize values are capped.
MAX_PAGE_SIZE = 1000
_PAGE_TOKEN_PREFIX = "ontology:"


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: numbers by value (1 == 1.0), but true is not 1, "1" is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if left is None or right is None:
        return left is None and right is None
    return type(left) is type(right) and bool(left == right)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@attrs.frozen
class QueryCase:
    parameters: Mapping[str, Any]
    result: Any

    def matches(self, parameters: Mapping[str, Any]) -> bool:
        return all(
            name in parameters and json_equal(parameters[name], expected)
            for name, expected in self.parameters.items()
        )


@attrs.frozen
class Query:
    api_name: str
    cases: tuple[QueryCase, ...]
    has_default: bool
    default: Any

    @classmethod
    def from_seed(cls, seed: QuerySeed) -> Query:
        return cls(
            api_name=seed.api_name,
            cases=tuple(QueryCase(dict(c.parameters), c.result) for c in seed.cases),
            has_default=seed.has_default,
            default=seed.default,
        )

    def evaluate(self, parameters: Mapping[str, Any], ontology: str) -> Any:
        """The result for these parameters: the first matching case, else the default."""
        for case in self.cases:
            if case.matches(parameters):
                return case.result
        if self.has_default:
            return self.default
        known = "; ".join(_compact(case.parameters) for case in self.cases)
        raise InvalidArgument(
            "NoMatchingQueryCase",
            f"Query {self.api_name!r} of ontology {ontology!r} has no case matching the "
            f"parameters {_compact(dict(parameters))} and no default result. "
            f"Its cases match: {known}.",
            {
                "ontology": ontology,
                "queryApiName": self.api_name,
                "parameters": dict(parameters),
                "caseParameters": [dict(case.parameters) for case in self.cases],
            },
        )


@attrs.frozen
class Ontology:
    rid: str
    api_name: str
    display_name: str
    description: str
    queries: Mapping[str, Query]

    @classmethod
    def from_seed(cls, seed: OntologySeed) -> Ontology:
        return cls(
            rid=seed.rid,
            api_name=seed.api_name,
            display_name=seed.display_name,
            description=seed.description,
            queries={query.api_name: Query.from_seed(query) for query in seed.queries},
        )

    def query(self, api_name: str) -> Query:
        query = self.queries.get(api_name)
        if query is None:
            raise NotFound(
                "QueryNotFound",
                f"The query {api_name!r} could not be found in ontology {self.api_name!r}.",
                {"query": api_name, "ontology": self.api_name},
            )
        return query


@attrs.frozen
class OntologyPage:
    data: tuple[Ontology, ...]
    next_page_token: str | None


def _encode_token(rid: str) -> str:
    raw = (_PAGE_TOKEN_PREFIX + rid).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(token: str) -> str | None:
    """The RID a page token starts at, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not text.startswith(_PAGE_TOKEN_PREFIX):
        return None
    return text[len(_PAGE_TOKEN_PREFIX) :]


@attrs.frozen
class Ontologies:
    """Every ontology in seed order. Seeded only: the emulated API cannot change them."""

    ontologies: tuple[Ontology, ...] = ()

    @classmethod
    def from_seed(cls, seeds: Iterable[OntologySeed]) -> Ontologies:
        return cls(tuple(Ontology.from_seed(seed) for seed in seeds))

    def resolve(self, identifier: str) -> Ontology:
        """An ontology by exact RID, else by API name."""
        for ontology in self.ontologies:
            if ontology.rid == identifier:
                return ontology
        for ontology in self.ontologies:
            if ontology.api_name == identifier:
                return ontology
        key = "ontologyRid" if RID_PATTERN.fullmatch(identifier) else "apiName"
        raise NotFound(
            "OntologyNotFound",
            f"The ontology {identifier!r} could not be found (give its RID or API name).",
            {key: identifier},
        )

    def page(self, page_size: int | None, page_token: str | None) -> OntologyPage:
        """One page in seed order. No page size: everything (Foundry's list does not page)."""
        if page_size is not None and page_size < 1:
            raise InvalidArgument(
                "InvalidPageSize",
                f"pageSize must be a positive integer, got {page_size}.",
                {"pageSize": page_size},
            )
        start = 0
        if page_token:
            rid = _decode_token(page_token)
            index = next(
                (i for i, ontology in enumerate(self.ontologies) if ontology.rid == rid), None
            )
            if index is None:
                raise InvalidArgument(
                    "InvalidPageToken",
                    "pageToken is not a token this list returned (pass nextPageToken unchanged, "
                    "or leave it out for the first page).",
                    {"pageToken": page_token},
                )
            start = index
        size = len(self.ontologies) if page_size is None else min(page_size, MAX_PAGE_SIZE)
        end = start + size
        data = self.ontologies[start:end]
        following = _encode_token(self.ontologies[end].rid) if end < len(self.ontologies) else None
        return OntologyPage(data=data, next_page_token=following)

    def execute(self, identifier: str, query_api_name: str, parameters: Mapping[str, Any]) -> Any:
        ontology = self.resolve(identifier)
        return ontology.query(query_api_name).evaluate(parameters, ontology.api_name)

    def count(self) -> int:
        return len(self.ontologies)

    def query_count(self) -> int:
        return sum(len(ontology.queries) for ontology in self.ontologies)
