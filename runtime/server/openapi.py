"""The OpenAPI 3.1 document of the /v1 routes (served at ``/v1/openapi.json``).

A test checks that its paths and methods are exactly the app's /v1 routes (each function's
own invoke and enqueue paths standing for the templated ones), so the document cannot drift
from the code, and schemathesis checks every answer against it. Each registered
function's payload schema is included as a component (``payload.<name>``), from msgspec's
JSON Schema of its type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from runtime.config.registry import Registry
from runtime.function import FunctionSpec
from runtime.server.admission import MAX_DELAY_S, MAX_IDEMPOTENCY_KEY_CHARS, MIN_WAIT_S
from runtime.server.batch import MAX_BATCH_ITEMS
from runtime.server.scale import operation as scale_operation

ERROR = {"$ref": "#/components/schemas/Error"}
JOB = {"$ref": "#/components/schemas/Job"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _seconds(name: str, low: float, high: float, description: str) -> dict[str, Any]:
    """A query parameter in seconds, with the bounds ``admission.float_param`` enforces."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "number", "minimum": low, "maximum": high},
    }


IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key returns the same job (and its stored result once done).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
}
PRIORITY = {
    "name": "priority",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["high", "default", "low"]},
}
COMMON_ERRORS = {
    "401": _error("Missing or wrong bearer token"),
    "503": _error(
        "Redis unreachable or refusing (redis_unavailable, redis_error), or this instance "
        "over http.max_concurrent_requests (overloaded); Retry-After"
    ),
}
BODY_ERRORS = {
    "400": _error("A bad query parameter or Idempotency-Key"),
    "404": _error("Unknown function"),
    "408": _error("The body did not arrive within http.body_timeout_s"),
    "413": _error("Body over http.max_body_bytes or the function's max_payload_bytes"),
    "422": _error(
        "The body is not JSON of the function's payload type (invalid_payload), or nests "
        "deeper than http.max_json_depth (too_deep)"
    ),
    "429": _error("Backlog or Redis memory over the admission limits (Retry-After)"),
    "507": _error("Redis is out of memory and refused the write (Retry-After)"),
}


def document(registry: Registry, *, max_wait_s: float = 300.0) -> dict[str, Any]:
    # One components section for every payload type, so each "$ref" resolves from the
    # document's root (msgspec's per-type schemas would point at their own "$defs").
    specs = list(registry)
    schemas, components = msgspec.json.schema_components(
        [spec.payload_type for spec in specs], ref_template="#/components/schemas/{name}"
    )
    payloads = {
        **{name: _carried(schema) for name, schema in components.items()},
        **{
            f"payload.{spec.name}": _carried(schema)
            for spec, schema in zip(specs, schemas, strict=True)
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "runtime", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                        "job_id": {"type": "string"},
                    },
                },
                "Job": {
                    "type": "object",
                    "required": ["id", "function", "state", "attempts", "recoveries"],
                    "properties": {
                        "id": {"type": "string"},
                        "function": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": ["queued", "delayed", "running", "completed", "dead"],
                        },
                        "priority": {"type": "string"},
                        "attempts": {"type": "integer"},
                        "recoveries": {"type": "integer"},
                        "enqueued_at": {"type": ["string", "null"], "format": "date-time"},
                        "started_at": {"type": ["string", "null"], "format": "date-time"},
                        "finished_at": {"type": ["string", "null"], "format": "date-time"},
                        "result": {},
                        "error": {"$ref": "#/components/schemas/Error/properties/error"},
                    },
                },
                **payloads,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            **_function_paths(specs, max_wait_s),
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job's state, attempts, timestamps, result or error",
                    "parameters": [
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The job",
                            "content": {"application/json": {"schema": JOB}},
                        },
                        "404": _error("Unknown or expired job"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/functions": {
                "get": {
                    "summary": "The registered functions with their effective limits",
                    "responses": {
                        "200": {
                            "description": "The registry",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/scale": {"get": scale_operation(COMMON_ERRORS)},
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **COMMON_ERRORS,
                    },
                }
            },
        },
    }


# A payload travels as msgpack, whose integers have 64 bits: the schemas of integer fields
# say so (a larger one is refused, 422). An unconstrained value (``Any``) cannot: JSON
# Schema does not tell 10**30 from 1e30, which is a float and accepted.
INT_BOUNDS = {"minimum": -(2**63), "maximum": 2**64 - 1}


def _carried(schema: Any) -> Any:
    """``schema`` (msgspec's) with its integer fields bounded to what a payload carries."""
    if isinstance(schema, list):
        return [_carried(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _carried(value) for key, value in schema.items()}
    types = out.get("type")
    if types == "integer" or (isinstance(types, list) and "integer" in types):
        out.setdefault("minimum", INT_BOUNDS["minimum"])
        out.setdefault("maximum", INT_BOUNDS["maximum"])
    return out


def _function_paths(specs: list[FunctionSpec], max_wait_s: float) -> dict[str, Any]:
    """The invoke and enqueue routes of each registered function, each with the body
    schema of its payload type (one templated path could not say which body goes with
    which name); the templated paths when none is registered."""
    if not specs:
        return {
            "/v1/functions/{name}/invoke": {"post": _invoke(None, [NAME_PARAM], max_wait_s)},
            "/v1/functions/{name}/jobs": {"post": _enqueue(None, [NAME_PARAM])},
            "/v1/functions/{name}/jobs:batch": {"post": batch_operation(None, [NAME_PARAM])},
        }
    paths: dict[str, Any] = {}
    for spec in specs:
        ref = {"$ref": f"#/components/schemas/payload.{spec.name}"}
        paths[f"/v1/functions/{spec.name}/invoke"] = {"post": _invoke(ref, [], max_wait_s)}
        paths[f"/v1/functions/{spec.name}/jobs"] = {"post": _enqueue(ref, [])}
        paths[f"/v1/functions/{spec.name}/jobs:batch"] = {"post": batch_operation(ref, [])}
    return paths


def _body(schema: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "required": schema is not None,
        "description": "JSON payload of the function's declared type (components "
        "payload.<name>); an empty body is null.",
        "content": {"application/json": {"schema": schema or {}}},
    }


def _invoke(
    payload: dict[str, Any] | None, params: list[dict[str, Any]], max_wait_s: float
) -> dict[str, Any]:
    return {
        "summary": "Run a function and wait for its result",
        "parameters": [
            *params,
            IDEMPOTENCY,
            PRIORITY,
            _seconds(
                "timeout_s",
                MIN_WAIT_S,
                max_wait_s,
                "Wait at most this long (default: the function's timeout_s, at most "
                "http.max_wait_s)",
            ),
        ],
        "requestBody": _body(payload),
        "responses": {
            "200": {
                "description": "The handler's result",
                "content": {"application/json": {"schema": {}}},
            },
            "502": _error("The job failed (dead-lettered): code is the reason"),
            "504": _error("Not finished in time; poll the Location"),
            **BODY_ERRORS,
            **COMMON_ERRORS,
        },
    }


def _enqueue(payload: dict[str, Any] | None, params: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = {
        "type": "object",
        "required": ["job_id", "created"],
        "properties": {"job_id": {"type": "string"}, "created": {"type": "boolean"}},
    }
    return {
        "summary": "Enqueue a job",
        "parameters": [
            *params,
            IDEMPOTENCY,
            PRIORITY,
            _seconds("delay_s", 0, MAX_DELAY_S, "Run no earlier than this"),
        ],
        "requestBody": _body(payload),
        "responses": {
            "202": {
                "description": "Accepted; Location: /v1/jobs/{id}",
                "content": {"application/json": {"schema": accepted}},
            },
            **BODY_ERRORS,
            **COMMON_ERRORS,
        },
    }


def batch_operation(payload: dict[str, Any] | None, params: list[dict[str, Any]]) -> dict[str, Any]:
    item = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "payload": payload or {},
            "idempotency_key": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
            },
        },
    }
    body = {
        "type": "object",
        "required": ["items"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_ITEMS, "items": item}
        },
    }
    answer = {
        "oneOf": [
            {
                "type": "object",
                "required": ["status", "job_id", "created"],
                "properties": {
                    "status": {"const": 202},
                    "job_id": {"type": "string"},
                    "created": {"type": "boolean"},
                },
            },
            {
                "type": "object",
                "required": ["status", "error"],
                "properties": {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "error": {"$ref": "#/components/schemas/Error/properties/error"},
                },
            },
        ]
    }
    count = {"type": "integer", "minimum": 0}
    answers = {
        "type": "object",
        "required": ["items", "created", "known", "failed"],
        "properties": {
            "items": {"type": "array", "items": answer},
            "created": count,
            "known": count,
            "failed": count,
        },
    }
    return {
        "summary": f"Enqueue up to {MAX_BATCH_ITEMS} jobs, with a status per item",
        "parameters": [
            *params,
            PRIORITY,
            _seconds("delay_s", 0, MAX_DELAY_S, "Run no earlier than this (every item)"),
        ],
        "requestBody": {
            "required": True,
            "description": "Items, each a payload of the function's type (null if left "
            "out) and an optional idempotency key",
            "content": {"application/json": {"schema": body}},
        },
        "responses": {
            "200": {
                "description": "Per item, in order: 202 with the job's id, or the error "
                "that kept it out (422 invalid_payload, 413 payload_too_large, 507/503 Redis)",
                "content": {"application/json": {"schema": answers}},
            },
            **{
                **BODY_ERRORS,
                "422": _error(
                    "The body is not a batch (invalid_batch), or nests deeper than "
                    "http.max_json_depth + 3 (too_deep)"
                ),
                "400": _error("A bad query parameter"),
            },
            **COMMON_ERRORS,
        },
    }
