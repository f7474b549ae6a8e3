"""The OpenAPI 3.1 document of the /v1 routes (served at ``/v1/openapi.json``).

A test checks that its paths and methods are exactly the app's /v1 routes, so the
document cannot drift from the code. Each registered function's payload schema is
included as a component (``payload.<name>``), from msgspec's JSON Schema of its type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from runtime.config.registry import Registry

ERROR = {"$ref": "#/components/schemas/Error"}
JOB = {"$ref": "#/components/schemas/Job"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _name_param() -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key returns the same job (and its stored result once done).",
    "schema": {"type": "string", "maxLength": 200},
}
PRIORITY = {
    "name": "priority",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["high", "default", "low"]},
}
COMMON_ERRORS = {
    "401": _error("Missing or wrong bearer token"),
    "503": _error("Redis unreachable (Retry-After)"),
}
BODY_ERRORS = {
    "400": _error("A bad query parameter or Idempotency-Key"),
    "404": _error("Unknown function"),
    "413": _error("Body over http.max_body_bytes or the function's max_payload_bytes"),
    "422": _error("The body does not match the function's payload type"),
    "429": _error("Backlog or Redis memory over the admission limits (Retry-After)"),
}


def document(registry: Registry) -> dict[str, Any]:
    # One components section for every payload type, so each "$ref" resolves from the
    # document's root (msgspec's per-type schemas would point at their own "$defs").
    specs = list(registry)
    schemas, components = msgspec.json.schema_components(
        [spec.payload_type for spec in specs], ref_template="#/components/schemas/{name}"
    )
    payloads = {
        **components,
        **{f"payload.{spec.name}": schema for spec, schema in zip(specs, schemas, strict=True)},
    }
    body = {
        "required": False,
        "description": "JSON payload, validated against the function's declared type "
        "(see components payload.<name>); an empty body is null.",
        "content": {"application/json": {"schema": {}}},
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
            "/v1/functions/{name}/invoke": {
                "post": {
                    "summary": "Run a function and wait for its result",
                    "parameters": [
                        _name_param(),
                        IDEMPOTENCY,
                        PRIORITY,
                        {
                            "name": "timeout_s",
                            "in": "query",
                            "required": False,
                            "description": "Wait at most this long (default: the function's "
                            "timeout_s, at most http.max_wait_s)",
                            "schema": {"type": "number", "exclusiveMinimum": 0},
                        },
                    ],
                    "requestBody": body,
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
            },
            "/v1/functions/{name}/jobs": {
                "post": {
                    "summary": "Enqueue a job",
                    "parameters": [
                        _name_param(),
                        IDEMPOTENCY,
                        PRIORITY,
                        {
                            "name": "delay_s",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 0},
                        },
                    ],
                    "requestBody": body,
                    "responses": {
                        "202": {
                            "description": "Accepted; Location: /v1/jobs/{id}",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "job_id": {"type": "string"},
                                            "created": {"type": "boolean"},
                                        },
                                    }
                                }
                            },
                        },
                        **BODY_ERRORS,
                        **COMMON_ERRORS,
                    },
                }
            },
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
