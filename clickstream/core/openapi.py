"""`GET /openapi.json`: the OpenAPI 3.1 description of a process's JSON routes, built from schemas/.

OpenAPI 3.1 schemas are JSON Schema draft 2020-12, the dialect of schemas/, so request and response
bodies are the schema files themselves (their `$schema` and `$id` dropped, as components): the
description cannot drift from what the validators enforce. Each component contributes its
operations (`Operations`); clickstream.web merges those of the components a process serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from clickstream.core.resources import load_schema, version

OPENAPI_VERSION = "3.1.0"

#: The body of every refusal (clickstream.core.errors): `{"error", "message", ...}`.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


@dataclasses.dataclass(frozen=True, slots=True)
class Operations:
    """A component's share of the document: `paths` (OpenAPI Path Items), `schemas` (components),
    `security_schemes`."""

    paths: Mapping[str, Any]
    schemas: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    security_schemes: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def schema_component(name: str) -> dict[str, Any]:
    """The JSON Schema file `schemas/<name>` as an OpenAPI component (without `$schema`, `$id`)."""
    return {k: v for k, v in load_schema(name).items() if k not in ("$schema", "$id")}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI response (or request body) of JSON `schema`."""
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    """An error response with the errors' JSON shape (and a `Retry-After` header)."""
    answer = json_body(ref("Error"), description)
    if retry_after:
        answer["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return answer


def document(title: str, parts: Iterable[Operations]) -> dict[str, Any]:
    """The OpenAPI document of `parts` merged (later parts add paths and components)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    security: dict[str, Any] = {}
    for part in parts:
        paths.update(part.paths)
        schemas.update(part.schemas)
        security.update(part.security_schemes)
    components: dict[str, Any] = {"schemas": schemas}
    if security:
        components["securitySchemes"] = security
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version(),
                 "description": "Contract: docs/architecture.md \"HTTP\"; bodies: schemas/ (JSON Schema 2020-12)."},
        "paths": paths,
        "components": components,
    }
