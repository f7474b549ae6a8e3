"""The ``@function`` decorator: a handler's limits and its payload type.

The decorator validates its options at import time of the handler module, so a typo fails
start-up (``runtime check``/``serve``) with the file, the line and a fix, never later in a
worker. It returns the handler itself, unchanged, with the options attached: a handler stays
a plain function that its author can call in a unit test.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runtime.errors import HandlerDefinitionError, PayloadError, PayloadTooLarge

Handler = Callable[..., Any]
Priority = Literal["high", "default", "low"]
Executor = Literal["async", "thread", "process"]
PRIORITIES: tuple[Priority, ...] = ("high", "default", "low")
SPEC_ATTR = "__runtime_function__"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(max, base*2**n))."""

    base_s: Annotated[float, Meta(ge=0)] = 1.0
    max_s: Annotated[float, Meta(ge=0)] = 300.0


class Breaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Circuit breaker: open when at least ``min_samples`` attempts finished in the last
    ``window_s`` and the share of failures (handler errors, timeouts, crashes) reaches
    ``failure_ratio``; stay open ``cooldown_s``; then let one probe through."""

    failure_ratio: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_samples: Annotated[int, Meta(ge=1, le=100_000)] = 20
    window_s: Annotated[float, Meta(gt=0, le=86_400)] = 30.0
    cooldown_s: Annotated[float, Meta(gt=0, le=86_400)] = 30.0


MAX_SHARDS = 64  # keep in step with runtime.queue.shards (lookups try at most this many)
RATE_PATTERN = r"^[0-9]+(\.[0-9]+)?/(s|m|h)$"
_RATE_PERIOD_MS = {"s": 1_000.0, "m": 60_000.0, "h": 3_600_000.0}


class FunctionOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The user-facing knobs of one function (ARCHITECTURE §5). Units are in the names."""

    concurrency: Annotated[int, Meta(ge=1, le=100_000)] = 16
    max_in_flight: Annotated[int, Meta(ge=0)] = 0  # fleet-wide; 0 means no fleet cap
    timeout_s: Annotated[float, Meta(gt=0)] = 60.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 3
    backoff: Backoff = Backoff()
    max_recoveries: Annotated[int, Meta(ge=0, le=1000)] = 3
    priority: Priority = "default"
    executor: Executor | None = None  # None: async for `async def`, thread for `def`
    max_payload_bytes: Annotated[int, Meta(ge=1)] = 1_048_576
    # Fleet-wide start rate, "100/s", "30/m" or "500/h" (GCRA on Redis time); None: none.
    rate_limit: Annotated[str, Meta(pattern=RATE_PATTERN)] | None = None
    rate_burst: Annotated[int, Meta(ge=1, le=1_000_000)] = 1  # starts allowed at once
    breaker: Breaker | None = None  # circuit breaker; None: never open
    # Hash tags (Redis Cluster slots) one function's queue is spread over (docs/architecture.md,
    # "Sharded functions"); max_in_flight and rate_limit are split between them.
    shards: Annotated[int, Meta(ge=1, le=MAX_SHARDS)] = 1

    @property
    def rate_interval_ms(self) -> float:
        """Milliseconds between two starts at the limited rate; 0 without a limit."""
        if self.rate_limit is None:
            return 0.0
        count, _, unit = self.rate_limit.partition("/")
        per = float(count)
        return _RATE_PERIOD_MS[unit] / per if per > 0 else 0.0


OPTION_NAMES: tuple[str, ...] = FunctionOptions.__struct_fields__


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """`` did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def format_validation_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> str:
    """``Expected `str`, got `int` - at `$.name``` becomes ``$.name: expected str, got int``."""
    text = str(exc).replace("`", "")
    message, sep, path = text.rpartition(" - at ")
    if not sep:
        return _lower_first(text)
    return f"{path}: {_lower_first(message)}"


def _lower_first(text: str) -> str:
    """``Expected str`` → ``expected str``, but ``JSON is malformed`` stays as it is."""
    if text[:1].isupper() and not text[1:2].isupper():
        return text[:1].lower() + text[1:]
    return text


class FunctionSpec(msgspec.Struct, frozen=True):
    """A registered handler: its name, options (after config overrides) and how to call it."""

    name: str
    handler: Handler
    options: FunctionOptions
    payload_type: Any
    takes_context: bool
    is_async: bool
    source: str  # "path/to/file.py:LINE", for error messages and `runtime functions`

    @property
    def executor(self) -> Executor:
        if self.options.executor is not None:
            return self.options.executor
        return "async" if self.is_async else "thread"

    def with_options(self, options: FunctionOptions) -> FunctionSpec:
        check_executor(options.executor, self.is_async, self.source)
        return msgspec.structs.replace(self, options=options)

    def convert(self, payload: Any) -> Any:
        """Convert a Python value (a dict, a Struct, ...) to the payload type, strictly."""
        try:
            return msgspec.convert(payload, self.payload_type, strict=True)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"{self.name}: {format_validation_error(exc)}") from None

    def decode_json(self, body: bytes) -> Any:
        """Decode a JSON document to the payload type, strictly, after the size check."""
        self.check_size(len(body))
        try:
            return msgspec.json.decode(body, type=self.payload_type, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadError(f"{self.name}: {format_validation_error(exc)}") from None

    def encode(self, payload: Any) -> bytes:
        """Validate and encode a payload for the envelope (msgpack), enforcing the size cap."""
        data = msgspec.msgpack.encode(self.convert(payload))
        self.check_size(len(data))
        return data

    def decode(self, data: bytes) -> Any:
        """Decode an envelope's payload bytes (msgpack) to the payload type, strictly."""
        self.check_size(len(data))
        return msgspec.msgpack.decode(data, type=self.payload_type, strict=True)

    def check_size(self, size: int) -> None:
        limit = self.options.max_payload_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"{self.name}: payload is {size} bytes, over max_payload_bytes={limit}"
            )


def check_executor(executor: Executor | None, is_async: bool, where: str) -> None:
    if executor == "async" and not is_async:
        raise HandlerDefinitionError(
            f"{where}: executor='async' needs an `async def` handler; "
            "use executor='thread' or 'process' for a plain `def`"
        )
    if executor in ("thread", "process") and is_async:
        raise HandlerDefinitionError(
            f"{where}: executor={executor!r} needs a plain `def` handler; "
            "an `async def` runs on the event loop (executor='async')"
        )


def where(func: Handler) -> str:
    code = getattr(func, "__code__", None)
    if code is None:
        return repr(func)
    return f"{code.co_filename}:{code.co_firstlineno}"


# Words people reach for that difflib would map to the wrong option (max_recoveries).
OPTION_ALIASES = {"max_retry": "max_attempts", "max_retries": "max_attempts"}


def suggest_option(key: str) -> str:
    if key in OPTION_ALIASES:
        return f"; did you mean '{OPTION_ALIASES[key]}'?"
    return suggest(key, OPTION_NAMES)


def parse_options(raw: dict[str, Any], where_: str) -> FunctionOptions:
    """Validate decorator or config options, naming any unknown or bad one with a fix."""
    for key in raw:
        if key not in OPTION_NAMES:
            raise HandlerDefinitionError(
                f"{where_}: unknown option '{key}'{suggest_option(key)}"
                f" (options: {', '.join(OPTION_NAMES)})"
            )
    values = dict(raw)
    backoff = values.get("backoff")
    if isinstance(backoff, tuple | list) and len(backoff) == 2:
        values["backoff"] = {"base_s": backoff[0], "max_s": backoff[1]}
    elif isinstance(backoff, Backoff):
        values["backoff"] = msgspec.structs.asdict(backoff)
    rate = values.get("rate_limit")
    if rate is not None and (
        not isinstance(rate, str) or not re.match(RATE_PATTERN, rate) or not float(rate[:-2])
    ):
        raise HandlerDefinitionError(
            f"{where_}: rate_limit={rate!r} must be a positive rate like '100/s', '30/m' "
            "or '500/h' (per second, minute or hour)"
        )
    breaker = values.get("breaker")
    if isinstance(breaker, Breaker):
        values["breaker"] = msgspec.structs.asdict(breaker)
    elif breaker is True:
        values["breaker"] = {}
    try:
        options = msgspec.convert(values, FunctionOptions, strict=True)
    except msgspec.ValidationError as exc:
        raise HandlerDefinitionError(f"{where_}: {format_validation_error(exc)}") from None
    if 0 < options.max_in_flight < options.shards:
        raise HandlerDefinitionError(
            f"{where_}: max_in_flight={options.max_in_flight} is split between "
            f"shards={options.shards}: give each shard at least one (max_in_flight >= shards), "
            "or fewer shards"
        )
    return options


def _custom_type(info: msgspec.inspect.Type, seen: set[int] | None = None) -> str:
    """The first type msgspec would not know how to decode from JSON, or ''."""
    seen = set() if seen is None else seen
    if id(info) in seen:
        return ""
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.CustomType):
        return f"{getattr(info.cls, '__qualname__', info.cls)!s} is not a msgspec type"
    children: list[msgspec.inspect.Type] = []
    for attr in ("item_type", "key_type", "value_type"):
        child = getattr(info, attr, None)
        if isinstance(child, msgspec.inspect.Type):
            children.append(child)
    children += list(getattr(info, "item_types", ()) or ())
    children += list(getattr(info, "types", ()) or ())
    children += [f.type for f in getattr(info, "fields", ()) or ()]
    for child in children:
        found = _custom_type(child, seen)
        if found:
            return found
    return ""


def inspect_handler(func: Handler, name: str | None = None) -> FunctionSpec:
    """Build a FunctionSpec from a handler, checking its signature and payload type."""
    loc = where(func)
    if not callable(func):
        raise HandlerDefinitionError(f"{loc}: @function must decorate a function")
    fn_name = name or func.__name__
    if not _NAME_RE.match(fn_name):
        raise HandlerDefinitionError(
            f"{loc}: function name {fn_name!r} must be letters, digits, '_' or '-' "
            "(at most 64, not starting with a digit)"
        )
    sig = inspect.signature(func)
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    extra = [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind in (p.KEYWORD_ONLY,)
    ]
    if not params or len(params) > 2 or extra:
        raise HandlerDefinitionError(
            f"{loc}: handler {fn_name!r} must take (event) or (event, ctx); got {sig}"
        )
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise HandlerDefinitionError(f"{loc}: cannot resolve annotations: {exc}") from None
    payload_type = hints.get(params[0].name, Any)
    try:
        msgspec.json.Decoder(payload_type)
        unsupported = _custom_type(msgspec.inspect.type_info(payload_type))
    except TypeError as exc:
        unsupported = str(exc)
    if unsupported:
        raise HandlerDefinitionError(
            f"{loc}: payload type {payload_type!r} is not supported: {unsupported}; "
            "use a msgspec.Struct, a builtin type, or no annotation"
        )
    is_async = inspect.iscoroutinefunction(func)
    raw: dict[str, Any] = getattr(func, SPEC_ATTR, {})
    options = parse_options(raw, loc)
    check_executor(options.executor, is_async, loc)
    return FunctionSpec(
        name=fn_name,
        handler=func,
        options=options,
        payload_type=payload_type,
        takes_context=len(params) == 2,
        is_async=is_async,
        source=loc,
    )


def function(func: Handler | None = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Mark a handler for the registry: ``@function`` or ``@function(concurrency=8, ...)``.

    Options are checked at once (unknown names get a "did you mean"); the handler is returned
    unchanged so it can be called directly in tests.
    """

    def mark(f: Handler) -> Handler:
        parse_options(options, where(f))
        setattr(f, SPEC_ATTR, dict(options))
        f.__runtime_name__ = name or f.__name__  # type: ignore[attr-defined]
        inspect_handler(f, name)  # fail at import, with file:line, not at first job
        return f

    if func is not None:
        return mark(func)
    return mark
