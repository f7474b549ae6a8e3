"""One validation of the merged sources into ``Settings``.

Every problem is collected, one line each (``key = value (from source): rule``), so one
run names them all: wrong types and bounds in msgspec's words made plain, unknown keys
with a "did you mean" hint, each ``[functions.<name>]`` option checked alone against
``FunctionOptions``, and the cross rule between the lease, the heartbeat and the Redis
timeout. Values are masked in every message (``runtime.config.redaction``).
"""

from __future__ import annotations

import difflib
import re
import typing
import urllib.parse
from typing import Any

import msgspec

from runtime.config.cluster_url import is_cluster_url, parse_cluster_url
from runtime.config.redaction import mask
from runtime.config.schema import MIN_SIGNING_KEY_CHARS, SCHEMA, SECTIONS, TABLES, Key, Settings
from runtime.function import OPTION_ALIASES, OPTION_NAMES, FunctionOptions, suggest

Leaf = tuple[Any, str]  # (value, source)
DEFAULT_SOURCE = "defaults"
_OPTION_HINTS = typing.get_type_hints(FunctionOptions, include_extras=True)
_KEY_LISTS = frozenset({("deploy", "verify_keys")})  # lists of signing keys
_CANDIDATES = [".".join(key) for key in SCHEMA] + list(SECTIONS) + list(TABLES)


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
    return f"{'.'.join(key)} = {mask(key, value)!r} (from {source}): {rule}"


def _unknown(key: Key, source: str) -> str:
    dotted = ".".join(key)
    hint = suggest(dotted, _CANDIDATES)
    if not hint and len(key) > 1:  # a misspelt section: [wroker] lease_s = ...
        close = difflib.get_close_matches(key[0], [*SECTIONS, *TABLES], n=1, cutoff=0.6)
        hint = f"; did you mean '{'.'.join((close[0], *key[1:]))}'?" if close else ""
    return f"unknown key '{dotted}' (from {source}){hint}"


def validate(leaves: dict[Key, Leaf], problems: list[str]) -> Settings | None:
    """``Settings`` from the merged leaves, or None with every problem added to ``problems``."""
    data: dict[str, Any] = {}
    tables: dict[str, dict[str, dict[str, Any]]] = {"functions": {}, "params": {}}
    for key, (value, source) in leaves.items():
        if key in SCHEMA:
            if key == ("log", "level") and isinstance(value, str):
                value = value.upper()
            try:
                checked = msgspec.convert(value, SCHEMA[key], strict=True)
            except msgspec.ValidationError as exc:
                problems.append(_problem(key, value, source, _rule(str(exc), SCHEMA[key])))
                continue
            if key == ("redis", "url") and checked and (rule := redis_url_problem(checked)):
                problems.append(_problem(key, value, source, rule))
                continue
            if key in _KEY_LISTS and any(0 < len(k) < MIN_SIGNING_KEY_CHARS for k in checked):
                rule = (
                    f"each key must be at least {MIN_SIGNING_KEY_CHARS} characters; make one "
                    "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
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
        elif key[0] in TABLES and len(key) >= 3:
            _put(tables[key[0]], key[1:], value)
        elif (key[0] in TABLES or key[0] in SECTIONS) and value == {}:
            continue  # an empty table sets nothing
        elif key[0] in TABLES or (len(key) == 1 and key[0] in SECTIONS):
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


URL_FORMS = (
    "must be empty (embedded redis-server) or a URL like redis://[[user]:password@]host"
    "[:port][/db], rediss://… (TLS), unix:///path/to/redis.sock, or "
    "redis+cluster://host:port[,host:port…] (Redis Cluster)"
)


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL the runtime can connect with (None: it is one).

    Parsed as redis-py parses it, so what passes here does not fail at the first connection:
    the scheme, a host, a port that is a number from 1 to 65535, a database number."""
    if is_cluster_url(url):
        try:
            parse_cluster_url(url)
        except ValueError as exc:
            return f"{exc}; {URL_FORMS}"
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number, or out of range
    except ValueError:  # its text would echo the port, which may be a misplaced password
        return f"the port is not a number from 1 to 65535; {URL_FORMS}"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return URL_FORMS
    if parts.scheme == "unix":
        return None if parts.path else f"a unix:// URL needs the socket's path; {URL_FORMS}"
    if not parts.hostname:
        return f"no host; {URL_FORMS}"
    if port == 0:
        return f"port 0 (give the port Redis listens on, 6379 by default); {URL_FORMS}"
    db = parts.path.lstrip("/")
    if db and not db.isdigit():  # its text is not echoed: it may hold a misplaced password
        return f"the database (the path after the host) is not a number; {URL_FORMS}"
    return _query_problem(parts.query)


# The query parameters redis-py turns into connection options (any other name would reach
# its Connection as an unknown keyword argument, and fail at the first connection).
URL_QUERY_NAMES = frozenset(
    [
        "db",
        "password",
        "username",
        "client_name",
        "health_check_interval",
        "max_connections",
        "readonly",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_timeout",
        "retry_on_timeout",
        "timeout",
        "protocol",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    ]
)


def _query_problem(query: str) -> str | None:
    """An unknown query parameter of a Redis URL, named (never its value), or None."""
    for name in urllib.parse.parse_qs(query, keep_blank_values=True):
        if name not in URL_QUERY_NAMES:
            shown = repr(name) if name.isidentifier() and len(name) <= 40 else "a parameter"
            return (
                f"unknown query parameter {shown} (names are lower case: password, username, "
                f"db, socket_timeout, ...); {URL_FORMS}"
            )
    return None


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
