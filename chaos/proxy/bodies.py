"""Request bodies of the API, decoded as the real server decodes them, with its checks in
its order: JSON first, then required fields, stream, default name and toxic type. A toxic
is decoded in two steps because the real server answers a duplicate name (409) before it
looks at the attributes (400): ``decode_toxic`` gives a draft, ``ToxicDraft.build`` the
toxic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaos.proxy.errors import INVALID_STREAM, INVALID_TOXIC_TYPE, BadRequest
from chaos.proxy.gojson import Field, JsonObject, Kind, Struct, decode_struct, kind_name, read_body
from chaos.proxy.toxics import KINDS, Direction, Toxic, ToxicKind

PROXY = Struct(
    "Proxy",
    "toxiproxy.Proxy",
    (
        Field("name", Kind.STRING),
        Field("listen", Kind.STRING),
        Field("upstream", Kind.STRING),
        Field("enabled", Kind.BOOL),
    ),
)
TOXIC = Struct(
    "ToxicWrapper",
    "toxics.ToxicWrapper",
    (
        Field("name", Kind.STRING),
        Field("type", Kind.STRING),
        Field("stream", Kind.STRING),
        Field("toxicity", Kind.FLOAT32),
        Field("attributes", Kind.RAW),
    ),
)


@dataclass(frozen=True, slots=True)
class ProxyInput:
    name: str
    listen: str
    upstream: str
    is_enabled: bool


def decode_proxy(raw: bytes) -> ProxyInput:
    """``POST /proxies``: name and upstream are required; enabled defaults to true."""
    item = _decode_proxy_value(read_body(raw))
    _check_required(item, "")
    return item


def decode_populate(raw: bytes) -> list[ProxyInput]:
    """``POST /populate`` and ``--config``: every item is checked before any is created."""
    value = read_body(raw)
    if value is None:
        return []
    if isinstance(value, JsonObject) or not isinstance(value, list):
        raise BadRequest(
            f"bad request body: json: cannot unmarshal {kind_name(value)} "
            "into Go value of type []toxiproxy.Proxy"
        )
    items = [_decode_proxy_value(element) for element in value]
    for number, item in enumerate(items, start=1):
        _check_required(item, f" at proxy {number}")
    return items


def decode_proxy_update(raw: bytes, current: ProxyInput) -> ProxyInput:
    """``POST``/``PATCH /proxies/{p}``: fields left out keep their current values."""
    fields: dict[str, Any] = {
        "name": current.name,
        "listen": current.listen,
        "upstream": current.upstream,
        "enabled": current.is_enabled,
    }
    decode_struct(read_body(raw), PROXY, fields)
    return ProxyInput(current.name, fields["listen"], fields["upstream"], fields["enabled"])


def _decode_proxy_value(value: Any) -> ProxyInput:
    fields: dict[str, Any] = {"name": "", "listen": "", "upstream": "", "enabled": True}
    decode_struct(value, PROXY, fields)
    return ProxyInput(fields["name"], fields["listen"], fields["upstream"], fields["enabled"])


def _check_required(item: ProxyInput, where: str) -> None:
    if not item.name:
        raise BadRequest(f"missing required field: name{where}")
    if not item.upstream:
        raise BadRequest(f"missing required field: upstream{where}")


@dataclass(frozen=True, slots=True)
class ToxicDraft:
    """A toxic whose attributes are not decoded yet."""

    name: str
    kind: ToxicKind
    stream: str
    direction: Direction
    toxicity: float
    raw_attributes: Any

    def build(self) -> Toxic:
        attributes = {field.key: 0 for field in self.kind.schema.fields}
        decode_struct(self.raw_attributes, self.kind.schema, attributes)
        return Toxic(self.name, self.kind, self.stream, self.direction, self.toxicity, attributes)


def decode_toxic(raw: bytes) -> ToxicDraft:
    """``POST /proxies/{p}/toxics``: stream defaults to downstream (an explicit ``""`` is
    invalid), the name to ``<type>_<stream>``, toxicity to 1."""
    fields: dict[str, Any] = {
        "name": "",
        "type": "",
        "stream": Direction.DOWNSTREAM.value,
        "toxicity": 1.0,
        "attributes": None,
    }
    decode_struct(read_body(raw), TOXIC, fields)
    direction = Direction.parse(fields["stream"])
    if direction is None:
        raise BadRequest(INVALID_STREAM)
    name = fields["name"] or f"{fields['type']}_{fields['stream']}"
    kind = KINDS.get(fields["type"])
    if kind is None:
        raise BadRequest(INVALID_TOXIC_TYPE)
    return ToxicDraft(
        name, kind, fields["stream"], direction, fields["toxicity"], fields["attributes"]
    )


def decode_toxic_update(raw: bytes, current: Toxic) -> Toxic:
    """``POST``/``PATCH /proxies/{p}/toxics/{t}``: attributes are merged key by key and
    toxicity changes only when sent; name, type and stream never change."""
    fields: dict[str, Any] = {
        "name": current.name,
        "type": current.kind.name,
        "stream": current.stream,
        "toxicity": current.toxicity,
        "attributes": None,
    }
    decode_struct(read_body(raw), TOXIC, fields)
    attributes = dict(current.attributes)
    decode_struct(fields["attributes"], current.kind.schema, attributes)
    return Toxic(
        current.name,
        current.kind,
        current.stream,
        current.direction,
        fields["toxicity"],
        attributes,
    )
