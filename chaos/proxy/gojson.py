"""The parts of Go's ``encoding/json`` that Toxiproxy clients can observe, for both directions.

Decoding follows ``json.Decoder.Decode`` into a Go struct: only the first JSON value of a
body counts, keys match case-insensitively, unknown keys and ``null`` values are ignored,
and a value of the wrong type is a 400 whose text mirrors Go's ``UnmarshalTypeError``.
Integer fields reject non-integral literals (``100.0``, ``1e3``): Python's ``json.dumps``
writes floats that way, and the real server refuses them, so this one must too.

Encoding is compact, escapes ``<``, ``>``, ``&``, U+2028 and U+2029 as Go does, and writes
float32 values in their shortest form (``1``, ``0.5``, ``0.2``).
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from chaos.proxy.errors import BadRequest

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38


class NumberText(str):
    """A JSON number written with a fraction or an exponent, kept as its source text."""


class JsonObject(list[tuple[str, Any]]):
    """A JSON object as its ordered key/value pairs, duplicates included (Go keeps the last)."""


class Kind(enum.Enum):
    """Go field types the API decodes; the value is Go's name for the type."""

    STRING = "string"
    BOOL = "bool"
    INT = "int"
    INT64 = "int64"
    FLOAT32 = "float32"
    RAW = "json.RawMessage"


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Struct:
    """A Go struct as seen by the decoder: its name for error texts and its JSON fields."""

    name: str
    qualified_name: str
    fields: tuple[Field, ...]

    def field_for(self, key: str) -> Field | None:
        # Go prefers an exact match, then falls back to a case-insensitive one.
        for field in self.fields:
            if field.key == key:
                return field
        folded = key.casefold()
        for field in self.fields:
            if field.key.casefold() == folded:
                return field
        return None


class _GoSyntaxError(ValueError):
    """NaN / Infinity: valid for Python's decoder, a syntax error for Go's."""


def _reject_constant(name: str) -> Any:
    if name.startswith("-"):
        raise _GoSyntaxError(f"invalid character {_go_quote_char(name[1])} in numeric literal")
    raise _GoSyntaxError(
        f"invalid character {_go_quote_char(name[0])} looking for beginning of value"
    )


_DECODER = json.JSONDecoder(
    parse_float=NumberText,
    parse_constant=_reject_constant,
    object_pairs_hook=JsonObject,
)
_WHITESPACE = " \t\r\n"


def read_body(raw: bytes) -> Any:
    """Decode the first JSON value of a request body, or raise ``bad request body: ...``."""
    text = raw.decode("utf-8", errors="replace").lstrip(_WHITESPACE)
    if not text:
        raise BadRequest("bad request body: EOF")
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"bad request body: {_syntax_error(text, exc.pos)}") from None
    except _GoSyntaxError as exc:
        raise BadRequest(f"bad request body: {exc}") from None
    return value


def _syntax_error(text: str, position: int) -> str:
    if position >= len(text):
        return "unexpected EOF"
    return f"invalid character {_go_quote_char(text[position])} looking for beginning of value"


def _go_quote_char(char: str) -> str:
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    if char.isprintable():
        return f"'{char}'"
    return "'" + char.encode("unicode_escape").decode("ascii") + "'"


def kind_name(value: Any) -> str:
    """The word Go's ``UnmarshalTypeError`` uses for a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | NumberText):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, JsonObject):
        return "object"
    return "array"


def decode_struct(value: Any, target: Struct, into: dict[str, Any]) -> None:
    """Merge the JSON object ``value`` into ``into`` (keyed by field), the way Go decodes
    into a struct that already holds defaults or current values."""
    if value is None:
        return
    if not isinstance(value, JsonObject):
        raise BadRequest(
            f"bad request body: json: cannot unmarshal {kind_name(value)} "
            f"into Go value of type {target.qualified_name}"
        )
    first_error: BadRequest | None = None
    for key, item in value:
        field = target.field_for(key)
        if field is None or item is None:
            continue
        try:
            into[field.key] = _convert(item, field)
        except _TypeMismatch as mismatch:
            # Go keeps decoding and reports the first type error at the end.
            if first_error is None:
                first_error = BadRequest(
                    f"bad request body: json: cannot unmarshal {mismatch.value} into Go struct "
                    f"field {target.name}.{field.key} of type {field.kind.value}"
                )
    if first_error is not None:
        raise first_error


class _TypeMismatch(Exception):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def _convert(item: Any, field: Field) -> Any:
    kind = field.kind
    if kind is Kind.RAW:
        return item
    if kind is Kind.STRING:
        if isinstance(item, str) and not isinstance(item, NumberText):
            return str(item)
        raise _TypeMismatch(kind_name(item))
    if kind is Kind.BOOL:
        if isinstance(item, bool):
            return item
        raise _TypeMismatch(kind_name(item))
    if isinstance(item, bool) or not isinstance(item, int | NumberText):
        raise _TypeMismatch(kind_name(item))
    if kind is Kind.FLOAT32:
        number = float(item)
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise _TypeMismatch(f"number {item}")
        return to_float32(number)
    # INT / INT64 (Go's int is 64 bits on every platform Toxiproxy ships for).
    if isinstance(item, NumberText) or not INT64_MIN <= item <= INT64_MAX:
        raise _TypeMismatch(f"number {item}")
    return int(item)


def to_float32(number: float) -> float:
    """Round a Python float to the nearest float32, as Go stores ``toxicity``."""
    return float(struct.unpack("<f", struct.pack("<f", number))[0])


def float32_json(number: float) -> float | int:
    """The value whose JSON text is Go's shortest float32 form (``1``, ``0.2``)."""
    if number == int(number) and abs(number) < 1e21:
        return int(number)
    for digits in range(1, 10):
        text = f"{number:.{digits}g}"
        if to_float32(float(text)) == number:
            return float(text)
    return number


def encode(value: Any) -> bytes:
    """Compact JSON, escaped like Go's encoder (which Toxiproxy uses for every body)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escape in _GO_ESCAPES:
        text = text.replace(char, escape)
    return text.encode("utf-8")


_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
