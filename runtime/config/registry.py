"""The registry: the functions of one folder, loaded by path, validated, with config overrides.

Only files in the configured folder can register functions, and a file whose real path is
outside the folder (an escaping symlink) is refused: the folder is the security boundary.
Every problem of every file is collected, so one ``runtime check`` shows them all.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from runtime.errors import HandlerDefinitionError, RegistryError, UnknownFunction
from runtime.function import SPEC_ATTR, FunctionSpec, inspect_handler, parse_options, suggest

MODULE_PREFIX = "_runtime_functions"


class Registry:
    """Functions by name. Immutable once built; a reload builds a new one."""

    def __init__(self, folder: Path, functions: Mapping[str, FunctionSpec]) -> None:
        self.folder = folder
        self._functions = dict(sorted(functions.items()))

    def __iter__(self) -> Iterator[FunctionSpec]:
        return iter(self._functions.values())

    def __len__(self) -> int:
        return len(self._functions)

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    @property
    def names(self) -> list[str]:
        return list(self._functions)

    def get(self, name: str) -> FunctionSpec:
        spec = self._functions.get(name)
        if spec is None:
            known = ", ".join(self._functions) or "none"
            raise UnknownFunction(
                f"unknown function '{name}'{suggest(name, self._functions)} (known: {known})"
            )
        return spec


class LiveRegistry(Registry):
    """The registry a serving process answers with *now* (the HTTP API, the producer, the
    refresher read it). ``swap`` replaces its contents in one step with no await, so a
    reader on the event loop sees the old functions or the new ones, never a mix; an
    iteration already under way finishes on the old ones."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry.folder, {})
        self.swap(registry)

    def swap(self, registry: Registry) -> None:
        self.folder, self._functions = registry.folder, registry._functions


def forget_folder(folder: Path) -> None:
    """Undo what :func:`load_registry` did to the interpreter for a *private* version folder
    (a deployment or a ``--reload`` snapshot): it leaves ``sys.path``, and its handler
    modules and flat ``_helper`` modules leave ``sys.modules``.

    Needed before loading the next version: otherwise its ``import _util`` would find the
    old helper, cached by name. Code already loaded keeps its module objects, so jobs still
    running on the old version are not disturbed. Never call it on a folder that holds
    anything else (the working directory, a package): only flat ``*.py`` names are dropped.
    """
    real = folder.resolve()
    while str(real) in sys.path:
        sys.path.remove(str(real))
    flat = {path.stem for path in real.glob("*.py")}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or Path(file).parent != real:
            continue
        if name in flat or name.startswith(MODULE_PREFIX + "."):
            del sys.modules[name]
    importlib.invalidate_caches()


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _error_location(exc: BaseException, path: Path) -> str:
    """``file:line`` of the innermost frame of ``path`` (or of a SyntaxError)."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f"{_relative(path)}:{exc.lineno}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{_relative(path)}:{line}" if line else _relative(path)


def import_file(path: Path) -> ModuleType:
    """Import one handler file by path under a private, collision-free module name."""
    digest = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:10]
    name = f"{MODULE_PREFIX}.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # msgspec and typing resolve names through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _handlers_of(module: ModuleType) -> list[Any]:
    """The module's own handlers, each once (``alias = hello`` is not a second function)."""
    return list(
        dict.fromkeys(
            obj
            for obj in vars(module).values()
            if callable(obj) and hasattr(obj, SPEC_ATTR) and obj.__module__ == module.__name__
        )
    )


def _merge(spec: FunctionSpec, override: Mapping[str, Any]) -> FunctionSpec:
    values = msgspec.structs.asdict(spec.options)
    values["backoff"] = msgspec.structs.asdict(spec.options.backoff)
    for key, value in override.items():
        if key == "backoff" and isinstance(value, Mapping):
            values["backoff"] = {**values["backoff"], **value}
        else:
            values[key] = value
    options = parse_options(values, f"config [functions.{spec.name}]")
    return spec.with_options(options)


def load_registry(
    folder: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Registry:
    """Import every ``*.py`` (not ``_*.py``) of ``folder`` and collect its functions.

    Raises RegistryError listing every problem, each with file:line and a fix.
    """
    root = Path(folder)
    if not root.is_dir():
        raise RegistryError(
            [f"{folder}: functions folder not found; create it or set functions_dir"]
        )
    real_root = root.resolve()
    # Helper modules of the folder (``_util.py``) can be imported by name. Appended, not
    # prepended: a file named like a standard module (json.py) must not shadow it.
    if str(real_root) not in sys.path:
        sys.path.append(str(real_root))
    problems: list[str] = []
    found: dict[str, FunctionSpec] = {}
    for path in sorted(root.glob("*.py")):
        if path.name.startswith("_"):
            continue
        real = path.resolve()
        if not real.is_relative_to(real_root):
            problems.append(
                f"{_relative(path)}: refused: it links to {real}, outside the functions "
                f"folder {real_root}; copy the file into the folder instead"
            )
            continue
        try:
            module = import_file(real)
        except HandlerDefinitionError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:
            problems.append(
                f"{_error_location(exc, path)}: cannot import: {type(exc).__name__}: {exc}"
            )
            continue
        for handler in _handlers_of(module):
            try:
                spec = inspect_handler(handler, getattr(handler, "__runtime_name__", None))
            except HandlerDefinitionError as exc:
                problems.append(str(exc))
                continue
            if spec.name in found:
                problems.append(
                    f"duplicate function name '{spec.name}': {found[spec.name].source} and "
                    f"{spec.source}; rename one with @function(name=...)"
                )
                continue
            found[spec.name] = spec
    for name, override in (overrides or {}).items():
        if name not in found:
            problems.append(
                f"config [functions.{name}]: no function '{name}' in {folder}{suggest(name, found)}"
            )
            continue
        try:
            found[name] = _merge(found[name], override)
        except HandlerDefinitionError as exc:
            problems.append(str(exc))
    if problems:
        raise RegistryError(problems)
    return Registry(real_root, found)
