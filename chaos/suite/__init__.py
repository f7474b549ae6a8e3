"""Chaos suites: real processes and real faults, and figures that prove no job is lost.

A scenario runs on a fresh stage (``stage.py``): a redis-server with its AOF
(``redis_server.py``), one Toxiproxy proxy per runtime (``network.py``), two ``runtime
serve`` processes with short leases (``fleet.py``), a load generator of unique job ids
(``load.py``) and handlers that record what really ran in an append-only witness
(``witness.py``). It injects its faults, and at quiescence the checker (``checker.py``)
compares the witness with Redis. ``scenarios/`` holds the scenarios and the catalogue,
``runner.py`` runs them in turn, ``report.py`` prints and saves the figures, and
``python -m chaos.suite`` is the command (see docs/chaos.md, "Chaos suites").
"""
