"""Configuration: sources, precedence, one validation into a frozen ``Settings`` struct.

Sources, lowest precedence first, each remembered per key so that an error can name it:

1. the defaults of the structs below;
2. ``<config_dir>/settings.toml`` (committed defaults);
3. ``<config_dir>/.secrets.toml``, then ``./.secrets.toml`` (never committed);
4. environment variables ``RUNTIME_<KEY>``, ``__`` for nesting (``RUNTIME_REDIS__URL``),
   values parsed by dynaconf's TOML-ish parser (``"5"`` is 5, ``"@int 5"`` too);
5. command-line flags, given to :func:`load_settings` as dotted keys.

Why not one ``Dynaconf(...)`` object: dynaconf lets its own ``*_FOR_DYNACONF`` environment
variables override its constructor (``SETTINGS_FILE_FOR_DYNACONF`` swaps the files,
``ENVIRONMENTS_FOR_DYNACONF`` turns on environments), always loads ``DYNACONF_*`` variables,
and its merged history cannot say which layer set a key. So this module reads the TOML
layers itself, parses environment values with dynaconf's parser, and merges the layers
keeping a source per key; nothing but the files named above is ever read.

Every key is matched case-insensitively and normalised to lower case. Validation collects
*all* problems, one line each (``key = value (from source): rule``), and raises
:class:`~runtime.errors.ConfigError`. Secrets (URL passwords, keys that look like
passwords or tokens) are masked in every message and in :func:`settings_to_dict`.
Importing this module reads nothing: loading happens only in :func:`load_settings`.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runtime.errors import ConfigError
from runtime.function import OPTION_ALIASES, OPTION_NAMES, FunctionOptions, suggest

ENV_PREFIX = "RUNTIME_"
CONFIG_DIR_ENV = "RUNTIME_CONFIG_DIR"
# RUNTIME_* variables that configure the loader itself, not a setting.
RESERVED_ENV = frozenset({CONFIG_DIR_ENV})
DEFAULT_SOURCE = "defaults"
CLI_SOURCE = "command line"


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""  # empty: start the embedded redis-server
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 5.0  # every Redis call's socket timeout
    connect_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 2.0
    embedded_dir: str = ".runtime/redis"
    max_connections: Annotated[int, Meta(ge=2, le=10_000)] = 64


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65_535)] = 8080  # 0: any free port
    # Bearer token of the /v1 routes. Empty: a random one is made at start and written to
    # <redis.embedded_dir>/../http-token (mode 0600), where the CLI finds it.
    token: str = ""
    metrics_need_token: bool = False  # put /metrics behind the token too
    max_body_bytes: Annotated[int, Meta(ge=1024, le=1_073_741_824)] = 16_777_216
    max_wait_s: Annotated[float, Meta(gt=0, le=3600)] = 300.0  # longest invoke wait
    debug: bool = False  # include tracebacks in 500 answers


class AdmissionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When the HTTP API refuses new jobs with 429 (0 disables a limit)."""

    max_backlog: Annotated[int, Meta(ge=0)] = 0  # ready + delayed jobs of one function
    max_memory_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.9  # of Redis maxmemory, if set
    retry_after_s: Annotated[int, Meta(ge=1, le=3600)] = 1


class MetricsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    refresh_s: Annotated[float, Meta(ge=0.1, le=300)] = 2.0  # queue gauges, instances


class TracingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = False
    exporter: Literal["otlp_http", "otlp_grpc", "console"] = "otlp_http"
    # Empty: the exporter's default, or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT when set.
    endpoint: str = ""
    headers: str = ""  # "key=value,key2=value2"; empty: OTEL_EXPORTER_OTLP_HEADERS
    service_name: str = "runtime"


class WorkerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lease_s: Annotated[float, Meta(ge=0.2)] = 30.0
    heartbeat_s: Annotated[float, Meta(gt=0)] = 10.0
    reclaim_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    idle_poll_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 10.0
    claim_batch: Annotated[int, Meta(ge=1, le=1000)] = 100
    keep_result_s: Annotated[int, Meta(ge=1)] = 86_400
    max_envelope_bytes: Annotated[int, Meta(ge=1024)] = 16_777_216


class DeploySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Versioned deployments (docs/deploying.md): how bundles are signed, limited and kept."""

    # HMAC-SHA256 key shared by deployers and runtimes, never stored in Redis. Empty:
    # `runtime deploy` refuses to publish and `runtime serve` serves a local folder.
    signing_key: str = ""
    dir: str = ".runtime/deployments"  # where a runtime extracts the versions it loads
    max_bundle_bytes: Annotated[int, Meta(ge=1024, le=268_435_456)] = 8_388_608
    max_files: Annotated[int, Meta(ge=1, le=10_000)] = 256
    keep_versions: Annotated[int, Meta(ge=2, le=10_000)] = 20  # in Redis; older are pruned
    check_interval_s: Annotated[float, Meta(gt=0, le=60)] = 1.0  # besides pub/sub
    validate_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0  # the import subprocess


MIN_SIGNING_KEY_CHARS = 32


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_\-]{1,32}$")] = "rt"
    functions_dir: str = "functions"
    # The serve process's event loop: "auto" = uvloop when installed, else asyncio's.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    worker: WorkerSettings = WorkerSettings()
    log: LogSettings = LogSettings()
    admission: AdmissionSettings = AdmissionSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    deploy: DeploySettings = DeploySettings()
    # [functions.<name>]: FunctionOptions keys, merged over decorator options by the registry
    functions: dict[str, dict[str, Any]] = {}
    # [params.<name>]: free-form parameters handed to that function's handler
    params: dict[str, dict[str, Any]] = {}


Key = tuple[str, ...]
Leaf = tuple[Any, str]  # (value, source)
_TABLES = ("functions", "params")
_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "redis": RedisSettings,
    "http": HttpSettings,
    "worker": WorkerSettings,
    "log": LogSettings,
    "admission": AdmissionSettings,
    "metrics": MetricsSettings,
    "tracing": TracingSettings,
    "deploy": DeploySettings,
}


def _schema() -> dict[Key, Any]:
    """Every scalar key of ``Settings`` with its annotated type."""
    hints = typing.get_type_hints(Settings, include_extras=True)
    known: dict[Key, Any] = {}
    for name, hint in hints.items():
        if name in _SECTIONS:
            for field, sub in typing.get_type_hints(_SECTIONS[name], include_extras=True).items():
                known[(name, field)] = sub
        elif name not in _TABLES:
            known[(name,)] = hint
    return known


_SCHEMA = _schema()
_OPTION_HINTS = typing.get_type_hints(FunctionOptions, include_extras=True)
_TEXT_KEYS = frozenset(
    key for key, hint in _SCHEMA.items() if typing.get_args(hint)[:1] == (str,) or hint is str
)
_CANDIDATES = [".".join(key) for key in _SCHEMA] + list(_SECTIONS) + list(_TABLES)
_SECRET_NAME = re.compile(
    r"pass(word)?|secret|token|api_?key|signing_?key|credential|private|headers", re.I
)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.I)


def redact_url(url: str) -> str:
    """``redis://user:pw@host:6379/0`` becomes ``redis://user:**@host:6379/0``.

    Splits at the *last* ``@`` so a password holding ``@`` or ``/`` is still masked
    (over-masking a strange URL is better than printing a secret).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:**@{host}"
    return scheme + sep + _QUERY_PASSWORD.sub(r"\1**", rest)


def _mask(key: Key, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask((*key, str(k)), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(key, v) for v in value]
    if key and _SECRET_NAME.search(key[-1]) and value not in ("", None, False):
        return "**"  # whatever its type: `token = 424242` is a secret too
    if isinstance(value, str):
        return redact_url(value) if "://" in value or "@" in value else value
    return value


def settings_to_dict(settings: Settings, *, masked: bool = True) -> dict[str, Any]:
    """Plain builtins for ``runtime config show``; secrets masked unless ``masked=False``."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    return _mask((), data) if masked else data


def load_settings(
    *, config_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read every source, validate once, and return ``Settings`` or raise ``ConfigError``."""
    problems: list[str] = []
    via = "--config" if config_dir is not None else "environment " + CONFIG_DIR_ENV
    explicit = config_dir is not None or bool(os.environ.get(CONFIG_DIR_ENV))
    if config_dir is None:
        config_dir = os.environ.get(CONFIG_DIR_ENV) or "config"
    base = Path(config_dir)
    if explicit and not base.is_dir():  # a typo must not silently mean "defaults"
        raise ConfigError(
            [f"config folder {str(config_dir)!r} (from {via}) not found; create it or fix the path"]
        )
    leaves: dict[Key, Leaf] = {}
    seen: set[Path] = set()
    for path in (base / "settings.toml", base / ".secrets.toml", Path(".secrets.toml")):
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            _merge(leaves, _file_leaves(path, problems))
    _merge(leaves, _env_leaves(os.environ))
    _merge(leaves, _override_leaves(overrides or {}))
    settings = _validate(leaves, problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _normalise(key: Key) -> Key:
    """Keys match case-insensitively, except the names inside ``[functions.<name>]`` and
    ``[params.<name>.<key>]``: function names and handler parameters keep their case."""
    head = key[0].lower() if key else ""
    if head == "params":
        return (head, *key[1:])
    if head == "functions":
        return (head, *key[1:2], *(part.lower() for part in key[2:]))
    return tuple(part.lower() for part in key)


def _flatten(data: Mapping[Any, Any], source: str, prefix: Key = ()) -> Iterator[tuple[Key, Leaf]]:
    for name, value in data.items():
        key = _normalise((*prefix, str(name)))
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, source, key)
        else:
            yield key, (dict(value) if isinstance(value, Mapping) else value, source)


def _merge(leaves: dict[Key, Leaf], new: Iterable[tuple[Key, Leaf]]) -> None:
    """Deep-merge one layer: a scalar replaces a table and vice versa; ``{}`` adds nothing."""
    for key, leaf in new:
        overlapping = [k for k in leaves if k[: len(key)] == key or key[: len(k)] == k]
        if leaf[0] == {} and any(len(k) > len(key) for k in overlapping):
            continue
        for old in overlapping:
            del leaves[old]
        leaves[key] = leaf


def _file_leaves(path: Path, problems: list[str]) -> Iterator[tuple[Key, Leaf]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{_label(path)}: cannot read: {exc}")
        return iter(())
    return _flatten(data, _label(path))


def _parse_text(raw: str) -> Any:
    """dynaconf's TOML-ish parsing of one string (imported late: dynaconf reads env on import)."""
    from dynaconf.utils.parse_conf import parse_conf_data

    try:
        value = parse_conf_data(raw, tomlfy=True, box_settings={})
    except Exception:  # e.g. "@int x": keep the text, validation will name the rule
        return raw
    return value


def _typed(key: Key, raw: str, source: str) -> Iterator[tuple[Key, Leaf]]:
    value = raw if key in _TEXT_KEYS else _parse_text(raw)
    if isinstance(value, Mapping) and value:
        yield from _flatten(value, source, key)
    else:
        yield key, (dict(value) if isinstance(value, Mapping) else value, source)


def _env_leaves(environ: Mapping[str, str]) -> Iterator[tuple[Key, Leaf]]:
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV:
            continue
        if upper.endswith("_FOR_DYNACONF"):  # dynaconf's own switches, never a setting
            continue
        key = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        yield from _typed(key, environ[name], f"environment {name}")


def _override_leaves(overrides: Mapping[str, Any]) -> Iterator[tuple[Key, Leaf]]:
    for dotted, value in overrides.items():
        if value is None:
            continue
        key = _normalise(tuple(dotted.split(".")))
        if isinstance(value, str):
            yield from _typed(key, value, CLI_SOURCE)
        elif isinstance(value, Mapping) and value:
            yield from _flatten(value, CLI_SOURCE, key)
        else:
            yield key, (value, CLI_SOURCE)


def _rule(message: str, hint: Any) -> str:
    """msgspec's ``Expected `float` >= 0.2`` becomes ``must be >= 0.2``."""
    if message.startswith("Invalid enum value"):
        choices = [a for arg in typing.get_args(hint) for a in (typing.get_args(arg) or [arg])]
        return "must be one of " + ", ".join(repr(c) for c in choices if c is not None)
    match = re.fullmatch(r"Expected `[^`]+` (matching regex|[<>]=?) (.+)", message)
    if match:
        verb = "must match regex" if match[1] == "matching regex" else f"must be {match[1]}"
        return f"{verb} {match[2]}"
    return message.replace("`", "")[:1].lower() + message.replace("`", "")[1:]


def _problem(key: Key, value: Any, source: str, rule: str) -> str:
    return f"{'.'.join(key)} = {_mask(key, value)!r} (from {source}): {rule}"


def _unknown(key: Key, source: str) -> str:
    dotted = ".".join(key)
    hint = suggest(dotted, _CANDIDATES)
    if not hint and len(key) > 1:  # a misspelt section: [wroker] lease_s = ...
        close = difflib.get_close_matches(key[0], [*_SECTIONS, *_TABLES], n=1, cutoff=0.6)
        hint = f"; did you mean '{'.'.join((close[0], *key[1:]))}'?" if close else ""
    return f"unknown key '{dotted}' (from {source}){hint}"


def _validate(leaves: dict[Key, Leaf], problems: list[str]) -> Settings | None:
    data: dict[str, Any] = {}
    tables: dict[str, dict[str, dict[str, Any]]] = {"functions": {}, "params": {}}
    for key, (value, source) in leaves.items():
        if key in _SCHEMA:
            if key == ("log", "level") and isinstance(value, str):
                value = value.upper()
            try:
                checked = msgspec.convert(value, _SCHEMA[key], strict=True)
            except msgspec.ValidationError as exc:
                problems.append(_problem(key, value, source, _rule(str(exc), _SCHEMA[key])))
                continue
            if (
                key == ("redis", "url")
                and checked
                and checked.split("://")[0]
                not in (
                    "redis",
                    "rediss",
                    "unix",
                )
            ):
                rule = (
                    "must be empty (embedded redis-server) or a redis://, rediss:// or unix:// URL"
                )
                problems.append(_problem(key, value, source, rule))
                continue
            if key == ("deploy", "signing_key") and 0 < len(checked) < MIN_SIGNING_KEY_CHARS:
                rule = (
                    f"must be empty or at least {MIN_SIGNING_KEY_CHARS} characters; make one "
                    "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
                problems.append(_problem(key, value, source, rule))
                continue
            _put(data, key, checked)
        elif key[0] in _TABLES and len(key) >= 3:
            _put(tables[key[0]], key[1:], value)
        elif (key[0] in _TABLES or key[0] in _SECTIONS) and value == {}:
            continue  # an empty table sets nothing
        elif key[0] in _TABLES or (len(key) == 1 and key[0] in _SECTIONS):
            problems.append(_problem(key, value, source, "must be a table"))
        else:
            problems.append(_unknown(key, source))
    for name, options in tables["functions"].items():
        _check_options(name, options, leaves, problems)
    _check_lease(leaves, data, problems)
    if problems:
        return None
    data.update(tables)
    return msgspec.convert(data, Settings)


def _put(tree: dict[str, Any], key: Key, value: Any) -> None:
    for part in key[:-1]:
        tree = tree.setdefault(part, {})
    tree[key[-1]] = value


def _source(leaves: dict[Key, Leaf], key: Key) -> str:
    """The source of ``key``, or of the nearest table or value above it."""
    while key and key not in leaves:
        key = key[:-1]
    return leaves[key][1] if key else DEFAULT_SOURCE


def _check_options(
    name: str, options: dict[str, Any], leaves: dict[Key, Leaf], problems: list[str]
) -> None:
    """Each ``[functions.<name>]`` option alone against ``FunctionOptions``, so all are named."""
    for option, value in options.items():
        key: Key = ("functions", name, option)
        if option not in OPTION_NAMES:
            problems.append(
                f"{'.'.join(key)}: unknown option (from {_source(leaves, key)})"
                + (
                    f"; did you mean '{OPTION_ALIASES[option]}'?"
                    if option in OPTION_ALIASES
                    else suggest(option, OPTION_NAMES)
                )
            )
            continue
        if option == "backoff" and isinstance(value, list) and len(value) == 2:
            value = {"base_s": value[0], "max_s": value[1]}  # as the decorator accepts it
        try:
            msgspec.convert({option: value}, FunctionOptions, strict=True)
        except msgspec.ValidationError as exc:
            message, _, where = str(exc).rpartition(" - at ")
            path = tuple(where.strip("`").removeprefix("$.").split("."))
            bad: Any = value
            for part in path[1:]:
                bad = bad.get(part) if isinstance(bad, dict) else bad
            full = ("functions", name, *path)
            hint = _OPTION_HINTS.get(path[0]) if len(path) == 1 else None
            problems.append(_problem(full, bad, _source(leaves, full), _rule(message, hint)))


def _check_lease(leaves: dict[Key, Leaf], data: dict[str, Any], problems: list[str]) -> None:
    """The lease must outlive one heartbeat interval plus one Redis timeout, or a healthy
    worker loses its job (it cannot extend the lease in time)."""
    keys = (("worker", "lease_s"), ("worker", "heartbeat_s"), ("redis", "timeout_s"))
    if any(k in leaves and k[1] not in data.get(k[0], {}) for k in keys):
        return  # one of them is already reported as invalid
    defaults = Settings()
    lease, heartbeat, timeout = (
        data.get(k[0], {}).get(k[1], getattr(getattr(defaults, k[0]), k[1])) for k in keys
    )
    if lease > heartbeat + timeout:
        return
    src = [_source(leaves, k) for k in keys]
    problems.append(
        f"worker.lease_s = {lease!r} (from {src[0]}): must be greater than "
        f"worker.heartbeat_s + redis.timeout_s = {heartbeat!r} (from {src[1]}) + {timeout!r} "
        f"(from {src[2]}); the lease must outlive one heartbeat interval plus one Redis "
        "timeout, or a healthy worker loses its job"
    )
