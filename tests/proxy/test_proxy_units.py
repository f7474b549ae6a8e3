"""Unit level, our server only (no sockets, no sleeps): toxic stages on in-memory channels,
Go-compatible JSON decoding, and address parsing and resolution."""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import Mapping

import pytest

from chaos.proxy import gojson
from chaos.proxy.address import resolve_listen, split_host_port
from chaos.proxy.bodies import decode_proxy, decode_toxic
from chaos.proxy.errors import BadRequest, ListenError
from chaos.proxy.pipe import Channel, Chunk, FlowBudget, Signal
from chaos.proxy.stage import Stage
from chaos.proxy.toxics import ToxicRun, run_limit_data, run_slicer, slice_sizes


async def run_stage(
    run: ToxicRun, attributes: Mapping[str, int], chunks: list[bytes]
) -> tuple[list[bytes], bool]:
    """Feed ``chunks`` and an EOF through one stage; return its output and whether it
    closed (passed an EOF on)."""
    budget = FlowBudget()
    source, sink = Channel(budget), Channel(budget)
    for data in chunks:
        source.put(Chunk(data, 0.0))
    source.put(Signal.EOF)
    stage = Stage(source, sink, random.Random(7))
    await asyncio.wait_for(run(stage, attributes), 2.0)
    out: list[bytes] = []
    is_closed = False
    while sink:
        item = sink.take()
        if isinstance(item, Chunk):
            out.append(item.data)
        else:
            is_closed = True
    return out, is_closed


@pytest.mark.parametrize(
    ("limit", "chunks", "expected"),
    [
        (100, [50], [50]),
        (100, [100], [100]),
        (100, [150], [100]),
        (100, [25, 25, 25, 25], [25, 25, 25, 25]),
        (100, [90, 20], [90, 10]),
        (0, [10], []),
    ],
)
async def test_limit_data_chunks(limit: int, chunks: list[int], expected: list[int]) -> None:
    out, is_closed = await run_stage(
        run_limit_data, {"bytes": limit}, [b"x" * size for size in chunks]
    )
    assert [len(data) for data in out] == expected
    assert is_closed


async def test_limit_data_count_survives_a_restart() -> None:
    budget = FlowBudget()
    source, sink = Channel(budget), Channel(budget)
    stage = Stage(source, sink, random.Random(1))
    source.put(Chunk(b"a" * 60, 0.0))
    stage.start(lambda s: run_limit_data(s, {"bytes": 100}))
    await asyncio.sleep(0)
    await stage.stop()  # an interrupt, as when another toxic is added
    source.put(Chunk(b"b" * 60, 0.0))
    stage.start(lambda s: run_limit_data(s, {"bytes": 100}))
    assert stage.task is not None
    await asyncio.wait_for(stage.task, 2.0)
    assert [sink.take(), sink.take(), sink.take()] == [
        Chunk(b"a" * 60, 0.0),
        Chunk(b"b" * 40, 0.0),
        Signal.EOF,
    ]


def test_slicer_splits_480_kb_into_about_average_pieces() -> None:
    sizes = slice_sizes(480_000, 1024, 512, random.Random(3))
    pieces = 480_000 // 1024
    assert pieces // 2 <= len(sizes) <= pieces // 2 + pieces
    assert sum(sizes) == 480_000
    assert all(0 < size <= 1024 + 512 for size in sizes)


async def test_slicer_gives_one_byte_pieces_and_keeps_the_data() -> None:
    data = b"abcdefghijklmnopqrstuvwx"
    attributes = {"average_size": 1, "size_variation": 0, "delay": 0}
    out, is_closed = await run_stage(run_slicer, attributes, [data])
    assert len(out) == 24
    assert b"".join(out) == data
    assert is_closed


async def test_an_interrupted_stage_hands_on_the_chunk_it_holds() -> None:
    budget = FlowBudget()
    source, sink = Channel(budget), Channel(budget)
    stage = Stage(source, sink, random.Random(1))
    attributes = {"average_size": 1, "size_variation": 0, "delay": 1_000_000}  # 1 s a piece
    source.put(Chunk(b"abcdef", 0.0))
    stage.start(lambda s: run_slicer(s, attributes))
    await asyncio.sleep(0)
    await asyncio.wait_for(stage.stop(), 1.0)
    assert [sink.take(), sink.take()] == [Chunk(b"a", 0.0), Chunk(b"bcdef", 0.0)]


def decode(text: str, struct: gojson.Struct) -> dict[str, object]:
    fields: dict[str, object] = {}
    gojson.decode_struct(gojson.read_body(text.encode()), struct, fields)
    return fields


LATENCY = gojson.Struct(
    "LatencyToxic",
    "toxics.LatencyToxic",
    (gojson.Field("latency", gojson.Kind.INT64), gojson.Field("jitter", gojson.Kind.INT64)),
)


def test_go_json_matches_keys_like_go() -> None:
    assert decode('{"LATENCY": 5, "Jitter": 1, "other": 2}', LATENCY) == {"latency": 5, "jitter": 1}
    assert decode('{"latency": 5, "latency": 6}', LATENCY) == {"latency": 6}
    assert decode('{"latency": null}', LATENCY) == {}
    # Only the first JSON value of a body counts, as with json.Decoder.
    assert decode('{"latency": 5} trailing', LATENCY) == {"latency": 5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad request body: EOF"),
        ("   ", "bad request body: EOF"),
        ('{"latency": 1', "bad request body: unexpected EOF"),
        (
            '{"latency": NaN}',
            "bad request body: invalid character 'N' looking for beginning of value",
        ),
        (
            '{"latency": 100.0}',
            "bad request body: json: cannot unmarshal number 100.0 into Go struct field "
            "LatencyToxic.latency of type int64",
        ),
        (
            '{"latency": 1e3}',
            "bad request body: json: cannot unmarshal number 1e3 into Go struct field "
            "LatencyToxic.latency of type int64",
        ),
        (
            '{"latency": 9223372036854775808}',
            "bad request body: json: cannot unmarshal number 9223372036854775808 into Go "
            "struct field LatencyToxic.latency of type int64",
        ),
        (
            '{"latency": true}',
            "bad request body: json: cannot unmarshal bool into Go struct field "
            "LatencyToxic.latency of type int64",
        ),
        (
            "[1]",
            "bad request body: json: cannot unmarshal array into Go value of type "
            "toxics.LatencyToxic",
        ),
    ],
)
def test_go_json_errors(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode(text, LATENCY)
    assert caught.value.message == message


def test_request_bodies_default_like_the_real_server() -> None:
    proxy = decode_proxy(b'{"name": "a", "upstream": "b:1"}')
    assert (proxy.listen, proxy.is_enabled) == ("", True)
    draft = decode_toxic(b'{"type": "latency", "toxicity": 0.2}')
    assert (draft.name, draft.stream) == ("latency_downstream", "downstream")
    assert gojson.float32_json(draft.toxicity) == 0.2  # stored as float32, shown shortest
    assert gojson.encode({"toxicity": gojson.float32_json(1.0), "n": "<&>"}) == (
        b'{"toxicity":1,"n":"\\u003c\\u0026\\u003e"}'
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost:3310", ("localhost", "3310")),
        ("[::1]:80", ("::1", "80")),
        (":8080", ("", "8080")),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, str]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("local373", "address local373: missing port in address"),
        ("::1:80", "address ::1:80: too many colons in address"),
        ("[::1]", "address [::1]: missing port in address"),
    ],
)
def test_split_host_port_errors(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split_host_port(address)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("localhost:3310", "127.0.0.1:3310"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("[::1]:80", "[::1]:80"),
        ("0.0.0.0:8080", "[::]:8080" if socket.has_ipv6 else "0.0.0.0:8080"),
        (":8080", "[::]:8080" if socket.has_ipv6 else "0.0.0.0:8080"),
    ],
)
async def test_listen_resolves_like_go(listen: str, expected: str) -> None:
    assert (await resolve_listen(listen)).text == expected


async def test_a_bad_listen_gives_go_text() -> None:
    with pytest.raises(ListenError, match=r"^listen tcp: address local373: missing port"):
        await resolve_listen("local373")
