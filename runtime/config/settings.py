"""Loading the settings: the sources, their precedence, and :func:`load_settings`.

Sources, lowest precedence first, each remembered per key so that an error can name it:

1. the defaults of the structs (``runtime.config.schema``);
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

Every key is matched case-insensitively and normalised to lower case. The merged layers
are validated once (``runtime.config.validation``), which collects *all* problems and
raises :class:`~runtime.errors.ConfigError`; secrets are masked in every message and in
``settings_to_dict`` (``runtime.config.redaction``).
Importing this module reads nothing: loading happens only in :func:`load_settings`.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from runtime.config.schema import SCHEMA, Key, Settings
from runtime.config.validation import Leaf, validate
from runtime.errors import ConfigError

ENV_PREFIX = "RUNTIME_"
CONFIG_DIR_ENV = "RUNTIME_CONFIG_DIR"
# RUNTIME_* variables that configure the loader itself, not a setting.
RESERVED_ENV = frozenset({CONFIG_DIR_ENV})
CLI_SOURCE = "command line"
_TEXT_KEYS = frozenset(  # str and Annotated[str, ...]; a tuple[str, ...] is parsed as a list
    key
    for key, hint in SCHEMA.items()
    if hint is str
    or (typing.get_origin(hint) is typing.Annotated and typing.get_args(hint)[0] is str)
)


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
    settings = validate(leaves, problems)
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
