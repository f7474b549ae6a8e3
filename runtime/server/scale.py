"""``GET /v1/scale``: how many replicas of ``runtime serve`` the fleet needs, for an
autoscaler (KEDA's ``metrics-api`` scaler reads ``fleet.replicas``; docs/deploying.md,
"Autoscaling").

For one function f, at a target utilisation u (``?target=``, default
``scale.target_utilization``):

    replicas(f) = ceil((schedulable(f) + in_flight(f)) / (slots(f) * u))

``schedulable`` is the ready jobs no limit holds back (``queue/backlog.py``), ``in_flight``
the live leases fleet-wide, ``slots`` the function's ``concurrency`` (each replica runs it).
Every replica runs every function, so the fleet needs ``max over f of replicas(f)``.
Jobs held back ask for no replica: more replicas cannot start them. So a function under a
fleet cap never asks for more than ``ceil(max_in_flight / (slots * u))``, a rate-limited
one no more than its rate keeps busy (in flight ≈ rate × run time, plus its burst), and
one whose breaker is open only for what still runs. Delayed jobs not yet due ask for
nothing until they are due; ``in_flight`` counts a job until it settles or its lease
expires, a crashed replica's jobs included.
"""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

from aiohttp import web

from runtime.function import FunctionSpec
from runtime.queue.backlog import HELD_REASONS, Backlog
from runtime.server.admission import float_param, known_params
from runtime.server.answers import ApiError, json_response
from runtime.server.appkeys import BACKLOG_KEY, REGISTRY_KEY, SETTINGS_KEY

MIN_TARGET = 0.01  # below it one job would ask for 100 replicas: surely a typo


def replicas(demand: int, slots: int, target: float) -> int:
    """``ceil(demand / (slots * target))``, exact for a decimal target: in floats,
    21 / (2 * 0.7) is 15.000000000000002 and would ask for a sixteenth replica."""
    if demand <= 0:
        return 0
    share = Fraction(target).limit_denominator(1_000_000)
    return math.ceil(Fraction(demand) / (slots * share))


def function_answer(spec: FunctionSpec, backlog: Backlog, target: float) -> dict[str, Any]:
    slots = spec.options.concurrency
    return {
        "replicas": replicas(backlog.schedulable + backlog.in_flight, slots, target),
        "schedulable": backlog.schedulable,
        "held": {reason: backlog.held[reason] for reason in HELD_REASONS},
        "in_flight": backlog.in_flight,
        "slots_per_instance": slots,
        "oldest_ready_age_s": round(backlog.oldest_ready_age_s, 3),
    }


async def scale(request: web.Request) -> web.Response:
    known_params(request, "target")
    target = float_param(request, "target", MIN_TARGET, 1.0)
    if target is None:
        target = request.app[SETTINGS_KEY].scale.target_utilization
    reader = request.app[BACKLOG_KEY]
    registry = request.app[REGISTRY_KEY]
    specs = list(registry)
    backlogs = await asyncio.gather(*(reader.read(spec.name, spec.options) for spec in specs))
    functions: dict[str, Any] = {}
    for spec, backlog in zip(specs, backlogs, strict=True):
        if backlog is None:  # counted and logged by the reader
            raise ApiError(
                503, "redis_error", f"{spec.name}: Redis answered the backlog read with "
                "something this runtime cannot read", headers={"Retry-After": "1"},
            )  # fmt: skip
        functions[spec.name] = function_answer(spec, backlog, target)
    busiest = max(functions, key=lambda name: functions[name]["replicas"], default=None)
    fleet = functions[busiest]["replicas"] if busiest is not None else 0
    return json_response(
        {
            "target": target,
            "fleet": {"replicas": fleet, "busiest": busiest if fleet else None},
            "functions": functions,
        }
    )


def operation(common_errors: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI operation of ``GET /v1/scale`` (openapi.py), with the answers every
    route shares."""
    count = {"type": "integer", "minimum": 0}
    function = {
        "type": "object",
        "required": ["replicas", "schedulable", "held", "in_flight", "slots_per_instance",
                     "oldest_ready_age_s"],
        "properties": {
            "replicas": count,
            "schedulable": count,
            "held": {
                "type": "object",
                "required": list(HELD_REASONS),
                "properties": {reason: count for reason in HELD_REASONS},
            },
            "in_flight": count,
            "slots_per_instance": {"type": "integer", "minimum": 1},
            "oldest_ready_age_s": {"type": "number", "minimum": 0},
        },
    }  # fmt: skip
    answer = {
        "type": "object",
        "required": ["target", "fleet", "functions"],
        "properties": {
            "target": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "fleet": {
                "type": "object",
                "required": ["replicas", "busiest"],
                "properties": {"replicas": count, "busiest": {"type": ["string", "null"]}},
            },
            "functions": {"type": "object", "additionalProperties": function},
        },
    }
    return {
        "summary": "The replicas the fleet needs for a target utilisation (for autoscalers)",
        "parameters": [
            {
                "name": "target",
                "in": "query",
                "required": False,
                "description": "Share of each replica's slots to keep busy (default: "
                "scale.target_utilization)",
                "schema": {"type": "number", "minimum": MIN_TARGET, "maximum": 1},
            }
        ],
        "responses": {
            "200": {
                "description": "Per function and for the fleet (fleet.replicas: the most any "
                "function needs)",
                "content": {"application/json": {"schema": answer}},
            },
            "400": {
                "description": "A bad or unknown query parameter",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            **common_errors,
        },
    }
