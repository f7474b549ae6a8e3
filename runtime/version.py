"""The package's version, from one source: ``[project] version`` in ``pyproject.toml``.

Installing the package (``pip install -e .`` or from a wheel) copies that value into the
distribution's metadata; everything that shows a version reads it from there, through
:func:`package_version`: ``runtime --version``, ``/readyz``, the fleet registry
(``{ns}:instances:info``) and the OpenTelemetry resource (``service.version``). No second
copy lives in the code, so a release changes one line.
"""

from __future__ import annotations

import functools

DISTRIBUTION = "redis-function-runtime"  # [project] name in pyproject.toml
UNKNOWN = "unknown"  # the package runs from a folder that was never installed


@functools.cache
def package_version() -> str:
    """The installed distribution's version, or ``"unknown"`` when it is not installed."""
    from importlib import metadata  # imported when asked: the CLI's start-up stays quick

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN
