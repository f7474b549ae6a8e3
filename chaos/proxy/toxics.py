"""The toxic types of Toxiproxy 2.12 and what each does to the chunks of one link.

Every behaviour follows the contract of ``Stage``: it returns when interrupted, handing on
the chunk it holds, or after ``close()``. Times in attributes are milliseconds, except
slicer's ``delay`` (microseconds); bandwidth's ``rate`` is KB/s with 1 KB = 1000 bytes.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chaos.proxy.gojson import Field, Kind, Struct, float32_json
from chaos.proxy.pipe import Chunk, Signal
from chaos.proxy.stage import Stage

Attributes = Mapping[str, int]
ToxicRun = Callable[[Stage, Attributes], Awaitable[None]]

BANDWIDTH_TICK_S = 0.1
"""Bandwidth sends a chunk larger than 100 ms worth of bytes in 100 ms pieces."""


class Direction(enum.Enum):
    """``upstream`` carries client → server bytes; ``downstream`` server → client."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"

    @classmethod
    def parse(cls, stream: str) -> Direction | None:
        """Case-insensitive, as the real server parses ``stream``."""
        folded = stream.lower()
        for direction in cls:
            if direction.value == folded:
                return direction
        return None


async def run_noop(stage: Stage, attributes: Attributes) -> None:
    while True:
        match await stage.receive():
            case Chunk() as chunk:
                stage.send(chunk)
            case Signal.EOF:
                stage.close()
                return
            case _:
                return


async def run_latency(stage: Stage, attributes: Attributes) -> None:
    # Each chunk is due at its own read time plus the delay, so chunks queued behind it
    # do not wait for it: the latency is pipelined and leaves throughput alone.
    latency_ms, jitter_ms = attributes["latency"], attributes["jitter"]
    while True:
        item = await stage.receive()
        if not isinstance(item, Chunk):
            if item is Signal.EOF:
                stage.close()
            return
        delay_ms = latency_ms
        if jitter_ms > 0:
            delay_ms += stage.rng.randrange(-jitter_ms, jitter_ms)
        due = item.read_at + delay_ms / 1000
        if not await stage.sleep_until(due):
            stage.send(item)
            return
        # Restamp with the release time so that a second latency toxic adds to this one.
        stage.send(Chunk(item.data, due))


async def run_bandwidth(stage: Stage, attributes: Attributes) -> None:
    rate = attributes["rate"]
    loop = asyncio.get_running_loop()
    debt_s = 0.0
    while True:
        item = await stage.receive()
        if not isinstance(item, Chunk):
            if item is Signal.EOF:
                stage.close()
            return
        if rate <= 0:
            # Rate 0 stalls the stream for good in the real server (a negative rate crashes
            # it); hold the chunk until the toxic is changed or removed.
            while await stage.sleep(BANDWIDTH_TICK_S):
                pass
            stage.send(item)
            return
        data = item.data
        debt_s += len(data) / (rate * 1000)
        piece = rate * 100
        while len(data) > piece:
            if not await stage.sleep(BANDWIDTH_TICK_S):
                stage.send(Chunk(data, item.read_at))
                return
            stage.send(Chunk(data[:piece], item.read_at))
            data = data[piece:]
            debt_s -= BANDWIDTH_TICK_S
        started = loop.time()
        if not await stage.sleep(debt_s):
            stage.send(Chunk(data, item.read_at))
            return
        # Oversleeping is credited back, so the average rate holds over many chunks.
        debt_s -= loop.time() - started
        stage.send(Chunk(data, item.read_at))


async def run_slow_close(stage: Stage, attributes: Attributes) -> None:
    while True:
        match await stage.receive():
            case Chunk() as chunk:
                stage.send(chunk)
            case Signal.EOF:
                # An interrupt during the delay closes at once rather than lose the EOF.
                await stage.sleep(attributes["delay"] / 1000)
                stage.close()
                return
            case _:
                return


async def run_timeout(stage: Stage, attributes: Attributes) -> None:
    # Drops everything; with timeout > 0 the link closes after that long without input
    # (an idle timer, re-armed by every dropped chunk); 0 is a blackhole.
    timeout_ms = attributes["timeout"]
    idle_s = timeout_ms / 1000 if timeout_ms > 0 else None
    while True:
        item = await stage.receive(idle_s)
        if isinstance(item, Chunk):
            continue
        if item is Signal.INTERRUPTED:
            return
        stage.close()
        return


async def run_reset_peer(stage: Stage, attributes: Attributes) -> None:
    # The first chunk (or EOF) triggers: wait, drop it, close. The connection set
    # SO_LINGER=0 at accept when this toxic was present, which turns the close into an RST.
    item = await stage.receive()
    if item is Signal.INTERRUPTED:
        return
    # Like the real server, this wait is not interruptible.
    await asyncio.sleep(attributes["timeout"] / 1000)
    stage.close()


async def run_slicer(stage: Stage, attributes: Attributes) -> None:
    average, variation = attributes["average_size"], attributes["size_variation"]
    delay_s = attributes["delay"] / 1_000_000
    while True:
        item = await stage.receive()
        if not isinstance(item, Chunk):
            if item is Signal.EOF:
                stage.close()
            return
        offset = 0
        for size in slice_sizes(len(item.data), average, variation, stage.rng):
            stage.send(Chunk(item.data[offset : offset + size], item.read_at))
            offset += size
            if delay_s > 0 and offset < len(item.data) and not await stage.sleep(delay_s):
                stage.send(Chunk(item.data[offset:], item.read_at))
                return


def slice_sizes(total: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """Split ``total`` bytes in halves, each midpoint moved by up to ``variation``, until
    every piece is at most ``average + variation`` bytes."""
    if total <= 0:
        return []
    if total <= max(average + variation, 1):
        return [total]
    middle = total // 2
    if variation > 0:
        middle += rng.randrange(-variation, variation)
    middle = min(max(middle, 1), total - 1)
    return slice_sizes(middle, average, variation, rng) + slice_sizes(
        total - middle, average, variation, rng
    )


async def run_limit_data(stage: Stage, attributes: Attributes) -> None:
    # The count lives in stage.state: it survives interrupts and restarts from zero only
    # when the toxic is added again (a new stage).
    limit = attributes["bytes"]
    while True:
        item = await stage.receive()
        if not isinstance(item, Chunk):
            if item is Signal.EOF:
                stage.close()
            return
        sent = stage.state.get("bytes_sent", 0)
        data = item.data[: max(limit - sent, 0)]
        stage.send(Chunk(data, item.read_at))
        stage.state["bytes_sent"] = sent + len(data)
        if sent + len(data) >= limit:
            stage.close()
            return


@dataclass(frozen=True, slots=True)
class ToxicKind:
    """A toxic type: its attribute schema (Go struct, field order = JSON order) and run."""

    name: str
    schema: Struct
    run: ToxicRun
    is_closing_on_remove: bool = False
    is_resetting: bool = False


def _kind(
    name: str, go_struct: str, fields: tuple[tuple[str, Kind], ...], run: ToxicRun, **flags: bool
) -> ToxicKind:
    schema = Struct(go_struct, f"toxics.{go_struct}", tuple(Field(k, t) for k, t in fields))
    return ToxicKind(name, schema, run, **flags)


KINDS: Mapping[str, ToxicKind] = {
    kind.name: kind
    for kind in (
        _kind("noop", "NoopToxic", (), run_noop),
        _kind(
            "latency",
            "LatencyToxic",
            (("latency", Kind.INT64), ("jitter", Kind.INT64)),
            run_latency,
        ),
        _kind("bandwidth", "BandwidthToxic", (("rate", Kind.INT64),), run_bandwidth),
        _kind("slow_close", "SlowCloseToxic", (("delay", Kind.INT64),), run_slow_close),
        # Removing a timeout toxic closes every link it was on (its Cleanup in Go).
        _kind(
            "timeout",
            "TimeoutToxic",
            (("timeout", Kind.INT64),),
            run_timeout,
            is_closing_on_remove=True,
        ),
        _kind(
            "reset_peer",
            "ResetToxic",
            (("timeout", Kind.INT64),),
            run_reset_peer,
            is_resetting=True,
        ),
        _kind(
            "slicer",
            "SlicerToxic",
            (("average_size", Kind.INT), ("size_variation", Kind.INT), ("delay", Kind.INT)),
            run_slicer,
        ),
        _kind("limit_data", "LimitDataToxic", (("bytes", Kind.INT64),), run_limit_data),
    )
}


@dataclass(frozen=True, slots=True)
class Toxic:
    """A toxic as configured on a proxy; immutable, replaced on update."""

    name: str
    kind: ToxicKind
    stream: str
    direction: Direction
    toxicity: float
    attributes: Attributes

    def to_json(self) -> dict[str, Any]:
        # Go's marshal order: attributes, name, type, stream, toxicity.
        return {
            "attributes": {
                field.key: self.attributes[field.key] for field in self.kind.schema.fields
            },
            "name": self.name,
            "type": self.kind.name,
            "stream": self.stream,
            "toxicity": float32_json(self.toxicity),
        }
