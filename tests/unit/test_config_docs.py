"""docs/configuration.md's table of keys against ``runtime.config.schema``: the same keys
in the same order, each with its type and default (the table says it is generated from the
schema; nothing generates it, so this test keeps it honest)."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import msgspec

from runtime.config.schema import SCHEMA, Settings

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (\w+) \| `([^`]*)` \|", re.M)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "list"  # a TOML list; the struct keeps it as a tuple (frozen settings)
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return "str" if typing.get_origin(hint) is typing.Literal else str(hint.__name__)


def test_the_documented_keys_are_the_schema_with_its_types_and_defaults() -> None:
    defaults: Any = msgspec.to_builtins(Settings())
    in_code = []
    for key, hint in SCHEMA.items():
        value = defaults
        for part in key:
            value = value[part]
        in_code.append((".".join(key), _type_name(hint), json.dumps(value)))
    assert ROW.findall(DOC.read_text(encoding="utf-8")) == in_code
