"""The package's layers: every import in ``runtime/`` points down (or sideways within a layer).

The layers, lowest first; a module may import its own layer and those below it:

    0 contract    runtime.errors, runtime.function, runtime.context (what handlers import),
                  runtime.version (the package's version, read from its metadata)
    1 jobs        envelope, outcome, records and settle entries: values, no I/O
    2 config      settings, the function registry
    3 observe     metrics, tracing, logs
    4 queue       keys, broker, scripts, waiter, fleet registry, epoch, admin passes
    5 client      the producer's API (``runtime.client``)
    6 execution   dispatcher, worker parts, attempt, breaker, quarantine, process pool
    7 deploy      bundles, their store, validation, the hot-swap watcher
    8 server      the composition root, routes, OpenAPI, embedded Redis
    9 cli         the ``runtime`` command
   10 package     ``runtime/__init__`` (the public facade) and ``runtime/__main__``

Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import up the stack
is still a dependency up the stack.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "runtime"

LAYERS: dict[str, int] = {
    "runtime.errors": 0,
    "runtime.function": 0,
    "runtime.context": 0,
    "runtime.version": 0,
    "runtime.jobs": 1,
    "runtime.config": 2,
    "runtime.observe": 3,
    "runtime.queue": 4,
    "runtime.client": 5,
    "runtime.execution": 6,
    "runtime.deploy": 7,
    "runtime.server": 8,
    "runtime.cli": 9,
    "runtime.__main__": 10,
    "runtime": 10,
}


def layer_of(module: str) -> int:
    """The layer of a dotted module name: its longest prefix in LAYERS."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        rank = LAYERS.get(".".join(parts[:n]))
        if rank is not None:
            return rank
    raise KeyError(f"{module} is in no layer: add its package to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(module: str, source: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every ``runtime`` module that ``source`` imports.

    ``from a.b import c`` names module ``a.b.c`` when ``c`` is a submodule, else ``a.b``;
    both resolve to the same layer unless ``a.b`` is the package root, so the candidate
    ``a.b.c`` is kept when it exists on disk."""
    found: list[tuple[int, str]] = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("runtime")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target != "runtime" and not target.startswith("runtime."):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                is_module |= (PACKAGE.parent / sub.replace(".", "/") / "__init__.py").exists()
                found.append((node.lineno, sub if is_module else target))
    return found


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    rank = layer_of(module)
    return [
        f"{module}:{line} imports {target} (layer {layer_of(target)} is above {rank})"
        for line, target in imported_modules(module, source, is_package=is_package)
        if layer_of(target) > rank
    ]


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down() -> None:
    problems: list[str] = []
    for path in all_modules():
        source = path.read_text("utf-8")
        problems += violations(module_name(path), source, is_package=path.name == "__init__.py")
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("runtime.queue.broker", "from runtime.execution.quarantine import suspect_threshold"),
        ("runtime.queue.broker", "import runtime.server.app"),
        ("runtime.jobs.envelope", "def f():\n    from runtime.config import settings\n"),
        ("runtime.execution.worker", "from runtime import Client"),
        ("runtime.execution.worker", "from ..server import routes"),
        ("runtime.errors", "from runtime.jobs.outcome import classify"),
    ],
)
def test_a_wrong_way_import_is_reported(module: str, source: str) -> None:
    assert len(violations(module, source)) == 1


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("runtime.server.app", "from runtime.queue.broker import RedisBroker"),
        ("runtime.queue.broker", "from runtime.queue import keys"),
        ("runtime.queue.broker", "from .keys import FunctionKeys"),
        ("runtime.cli.main", "from runtime import errors"),
        ("runtime.jobs.outcome", "from runtime.errors import Retry"),
    ],
)
def test_a_downward_or_sideways_import_is_allowed(module: str, source: str) -> None:
    assert violations(module, source) == []


def test_every_module_has_a_layer() -> None:
    for path in all_modules():
        layer_of(module_name(path))  # raises for a module outside every layer


def test_every_subpackage_says_its_layer() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text("utf-8"))) or ""
        assert "Layer" in doc and "May import" in doc, f"{init}: say the layer and its imports"


def test_only_the_queue_layer_imports_redis_py() -> None:
    """redis-py's types (and exceptions) end in runtime.queue: see queue/connection.py."""
    offenders: list[str] = []
    for path in all_modules():
        module = module_name(path)
        if module.startswith("runtime.queue"):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [f"{module}:{node.lineno} imports {n}" for n in names if n == "redis"]
            offenders += [
                f"{module}:{node.lineno} imports {n}" for n in names if n.startswith("redis.")
            ]
    assert offenders == []


MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def test_no_module_over_400_lines_and_no_class_over_250() -> None:
    """The house limits: a module or class a reader can hold in their head."""
    too_long: list[str] = []
    for path in all_modules():
        source = path.read_text("utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{module_name(path)}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"{module_name(path)}.{node.name}: {size} lines")
    assert too_long == []
