"""An OpenAPI 3.1 description generated from the routes the app really has (never hand-kept).

Owns turning the Quart URL map (and any raw ASGI routes in front of it) into paths,
operations and parameters, with the error family of each path, for `/_emulate/openapi.json`
and for fuzzing. Only routes the app serves appear; nothing is written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .. import __version__
from ..platform.errors import FamilyMap

_CONVERTER = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_IGNORED_METHODS = {"HEAD", "OPTIONS"}


def build_openapi(
    routes: Iterable[tuple[str, Iterable[str], str]],
    families: FamilyMap,
    *,
    title: str = "emulator",
) -> dict[str, Any]:
    """`routes` are (rule with <converters>, methods, summary) triples."""
    paths: dict[str, dict[str, Any]] = {}
    for rule, methods, summary in sorted(routes, key=lambda item: item[0]):
        template = _CONVERTER.sub(r"{\1}", rule)
        names = _CONVERTER.findall(rule)
        family = families.for_path(rule.split("<", 1)[0])
        item = paths.setdefault(template, {})
        slug = re.sub(r"[^A-Za-z0-9]+", "_", template).strip("_")
        for method in sorted(set(methods) - _IGNORED_METHODS):
            item[method.lower()] = {
                "summary": summary,
                "operationId": f"{method.lower()}_{slug}",
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in names
                ],
                "responses": {
                    "default": {
                        "description": f"an answer; errors use the {family.name} family",
                        "content": {"application/json": {"schema": family.schema()}},
                    }
                },
                "x-error-family": family.name,
            }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{title} (emulator)", "version": __version__},
        "paths": paths,
    }
