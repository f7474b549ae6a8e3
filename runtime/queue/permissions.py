"""What a Redis ACL refusal means, in one line: which command, key or channel the Redis user
may not use, and the ACL rule that grants it (``connection.translated`` calls this).

Redis 7.0 answers a refused call in one of two ways:

- a command sent by the runtime: ``NOPERM this user has no permissions to run the 'incrby'
  command`` (or "to access one of the keys / channels used as arguments"): the command is
  named, and the key or channel is taken from the call's own arguments;
- a command run inside a script: ``ERR The user executing the script can't run this command
  or subcommand`` (or "can't access at least one of the keys"): Redis names neither, so the
  line names the script and points at its list in docs/security.md and at ``ACL LOG``,
  which on the server names exactly what was refused.

The rules suggested follow the key and channel layout of ``keys.py``: a function's keys
``{ns:fn}:…`` are granted by ``~{ns:*}:*``, the namespace's ``{ns}:…`` by ``~{ns}:*``, and
every channel by ``&{ns}:*``.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

from runtime.errors import BrokerPermissionError
from runtime.queue.scripts import source

# redis-py strips the "NOPERM " of the reply (its NoPermissionError): match what follows.
_NOPERM = re.compile(r"no permissions to (run|access)", re.I)
_RUN = re.compile(r"no permissions to run the '([^']+)' command", re.I)
_KEYS = re.compile(r"no permissions to access one of the keys", re.I)
_CHANNELS = re.compile(r"no permissions to access one of the channels", re.I)
_IN_SCRIPT = re.compile(r"user executing the script can't (run|access)", re.I)
_SCRIPT_SHA = re.compile(r"script: ([0-9a-f]{40})")
_PIPELINE = re.compile(r"Command # \d+ \(([^)]*)\) of pipeline", re.I)
_TAG = re.compile(r"\{([^}:]*)(:[^}]*)?\}")
SECURITY_DOC = "docs/security.md lists the rules of each role"


def permission_error(
    message: str, command: tuple[Any, ...], cause: str
) -> BrokerPermissionError | None:
    """The runtime's error for a Redis ACL refusal, or None if ``message`` is not one."""
    in_script = _IN_SCRIPT.search(message)
    if in_script is None and _NOPERM.search(message) is None:
        return None
    args = [_text(a) for a in command]
    if not args and (call := _PIPELINE.search(message)):
        args = call.group(1).split()
    name = args[0].lower() if args else "?"
    if in_script is not None or name in ("evalsha", "eval", "fcall"):
        return _in_script(message, args, cause)
    if match := _RUN.search(message):
        refused = match.group(1)
        rule = "+" + refused
        what = f"command '{refused}'"
    elif _CHANNELS.search(message):
        refused = " ".join(args[1:4]) or "?"
        rule = _channel_rule(args[1] if len(args) > 1 else "")
        what = f"channel '{refused}' of '{name}'"
    elif _KEYS.search(message):
        refused = args[1] if len(args) > 1 else "?"
        rule = _key_rule(refused)
        what = f"key '{refused}' of '{name}'"
    else:
        refused, rule, what = name, "", f"'{name}'"
    return BrokerPermissionError(
        f"Redis refused {what} to this Redis user (NOPERM): add the ACL rule "
        f"'{rule or '?'}' to the user the runtime connects as (ACL SETUSER <user> "
        f"{rule or '...'}); {SECURITY_DOC}",
        cause,
        refused=refused,
        rule=rule,
    )


def _in_script(message: str, args: list[str], cause: str) -> BrokerPermissionError:
    sha = args[1] if len(args) > 1 and len(args[1]) == 40 else ""
    if not sha and (found := _SCRIPT_SHA.search(message)):
        sha = found.group(1)
    script = _script_names().get(sha, sha[:12] or "?")
    count = int(args[2]) if len(args) > 2 and args[2].isdigit() else 0
    keys = args[3 : 3 + count]
    kind = "a key" if "access" in message.lower() else "a command"
    rules = sorted({_key_rule(k) for k in keys})
    return BrokerPermissionError(
        f"Redis refused {kind} inside script '{script}' to this Redis user (NOPERM; Redis "
        f"does not say which: ACL LOG on the server does): grant every command that script "
        f"runs and the key rules {' '.join(rules) or '?'}; {SECURITY_DOC}",
        cause,
        refused=f"script {script}",
        rule=" ".join(rules),
    )


def _key_rule(key: str) -> str:
    tag = _TAG.match(key)
    if tag is None:
        return f"~{key}"
    return f"~{{{tag.group(1)}:*}}:*" if tag.group(2) else f"~{{{tag.group(1)}}}:*"


def _channel_rule(channel: str) -> str:
    """``&{ns}:*``; on Redis Cluster a function's channel (``{ns:fn}:wake``) ``&{ns:*}:*``."""
    tag = _TAG.match(channel)
    if tag is None:
        return f"&{channel}"
    return f"&{{{tag.group(1)}:*}}:*" if tag.group(2) else f"&{{{tag.group(1)}}}:*"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@cache
def _script_names() -> dict[str, str]:
    """The SHA1 of each script of ``lua/`` (as EVALSHA sends it, to one Redis or to a
    cluster: scripts.source) -> its name."""
    names = [
        entry.name.removesuffix(".lua")
        for entry in resources.files("runtime.queue").joinpath("lua").iterdir()
        if entry.name.endswith(".lua") and not entry.name.startswith("_")
    ]
    return {
        hashlib.sha1(source(n, is_sharded=sharded).encode(), usedforsecurity=False).hexdigest(): n
        for n in names
        for sharded in (False, True)
    }
