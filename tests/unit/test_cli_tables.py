"""Pins of every table the ``runtime`` command prints for a person, byte for byte: the
functions of ``check`` and ``functions``, those of ``deploy``, the versions of
``deployments``, the three tables of ``stats`` and the job list of ``peek``.

The expected texts were printed by each command's own table code before the CLI package
got one table printer; they change only when the output is meant to change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runtime.cli.admin_text import peek_text, stats_text
from runtime.cli.deploy_text import VersionRow, deployments_text, functions_table
from runtime.cli.main import run
from runtime.cli.table import table_lines, table_text
from runtime.deploy.bundle import FunctionEntry
from runtime.function import FunctionOptions
from runtime.queue.admin_stats import FunctionStats, Stats
from runtime.queue.peek import JobView, Peek

pytestmark = pytest.mark.usefixtures("restore_root_logger")

HANDLERS = """\
from runtime import function


@function(concurrency=4, max_in_flight=120, timeout_s=2.5, max_attempts=10, max_recoveries=0,
          priority="high")
async def alpha(event: int) -> int:
    return event


@function
def a_much_longer_function_name(event: str) -> str:
    return event


@function(executor="process", timeout_s=600, priority="low")
def gamma(event: None) -> None:
    return None
"""
FUNCTIONS_TABLE = """\
function                     executor  concurrency  max_in_flight  timeout_s  max_attempts  max_recoveries  priority  source
a_much_longer_function_name  thread    16           -              60         3             3               default   <tmp>/functions/pin_tables.py:10
alpha                        async     4            120            2.5        10            0               high      <tmp>/functions/pin_tables.py:4
gamma                        process   16           -              600        3             3               low       <tmp>/functions/pin_tables.py:15
"""  # noqa: E501


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "pin_tables.py").write_text(HANDLERS)
    return folder


def testfunctions_table(handlers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["functions", "--functions", str(handlers)]) == 0
    out = capsys.readouterr().out.replace(str(handlers.parent), "<tmp>")
    assert out == FUNCTIONS_TABLE


def test_check_table(handlers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "functions"]) == 0
    out = capsys.readouterr().out.replace(str(handlers.parent), "<tmp>")
    assert out == FUNCTIONS_TABLE + "\n3 function(s) OK in functions\n"


def test_deployfunctions_table() -> None:
    functions = [
        FunctionEntry("alpha", "async", FunctionOptions(concurrency=4, max_in_flight=120,
                      timeout_s=2.5, max_attempts=10, priority="high"), "functions/a.py:4"),
        FunctionEntry("a_much_longer_function_name", "thread", FunctionOptions(),
                      "functions/long_module_name.py:120"),
        FunctionEntry("gamma", "process", FunctionOptions(timeout_s=600, priority="low"),
                      "functions/g.py:16"),
    ]  # fmt: skip
    assert functions_table(functions) + "\n" == textwrap.dedent("""\
        function                     executor  concurrency  max_in_flight  timeout_s  max_attempts  priority  source
        alpha                        async     4            120            2.5        10            high      functions/a.py:4
        a_much_longer_function_name  thread    16           -              60         3             default   functions/long_module_name.py:120
        gamma                        process   16           -              600        3             low       functions/g.py:16
        """)  # noqa: E501


def _version(version: int, **overrides: object) -> VersionRow:
    values: dict[str, object] = {
        "version": version, "is_active": False, "signature": "ok",
        "digest": "0123456789abcdef0123", "created_by": "ann@build-7",
        "created_at_ms": 1_700_000_000_000 + version * 3_600_000, "message": None,
        "functions": ["hello", "slow"], "running_on": [], "refused_by": {},
    }  # fmt: skip
    values.update(overrides)
    return VersionRow(**values)  # type: ignore[arg-type]


def test_deployments_table() -> None:
    rows = [
        _version(12, is_active=True, running_on=["h-1-a", "h-2-b"], message="fix the timeout"),
        _version(11, signature="INVALID", refused_by={"h-2-b": "bad signature"}, functions=[]),
        _version(3, digest=None, created_by=None, created_at_ms=None, functions=["hello"]),
    ]
    assert deployments_text(rows, has_key=True) + "\n" == DEPLOYMENTS
    unverified = [_version(1, signature="unverified", running_on=["h-1-a"])]
    assert deployments_text(unverified, has_key=False) + "\n" == DEPLOYMENTS_WITHOUT_KEY


DEPLOYMENTS = """\
version  active  digest        created (UTC)        by           signature  instances             functions
12       *       0123456789ab  2023-11-15 10:13:20  ann@build-7  ok         2 running             hello, slow
11               0123456789ab  2023-11-15 09:13:20  ann@build-7  INVALID    0 running, 1 refused
3                ?             ?                    ?            ok         0 running             hello

messages:
  v12 fix the timeout

refused by instances (they keep running their previous version):
  v11 on h-2-b: bad signature
"""  # noqa: E501
DEPLOYMENTS_WITHOUT_KEY = """\
version  active  digest        created (UTC)        by           signature   instances  functions
1                0123456789ab  2023-11-14 23:13:20  ann@build-7  unverified  1 running  hello, slow

(no deploy.signing_key here: signatures not checked)
"""


def _stats(function: str, **overrides: object) -> FunctionStats:
    values: dict[str, object] = {
        "function": function, "is_registered": True,
        "ready": {"high": 1, "default": 20, "low": 0}, "delayed": 3, "in_flight": 4,
        "max_in_flight": 32, "lease_expired": 0, "dead": 7,
        "oldest_wait_s": {"high": 2.0, "default": 75.0, "low": None},
        "per_minute": {"completed": 120.0, "failed": 1.5},
        "totals": {"completed": 900, "dead": 7, "stale_acks": 12_345},
    }  # fmt: skip
    values.update(overrides)
    return FunctionStats(**values)  # type: ignore[arg-type]


def test_stats_tables() -> None:
    functions = [
        _stats("hello"),
        _stats("a_longer_name", is_registered=False, max_in_flight=None, lease_expired=2,
               ready={"high": 0, "default": 123_456, "low": 7}, oldest_wait_s={"high": None},
               per_minute={"completed": 0.25, "failed": 4321.7}, totals={},
               breakers={"h:1": "open", "h:2": "closed"}),
    ]  # fmt: skip
    instances = [
        {"id": "h-1-ab", "host": "h", "pid": 1, "version": "0.1.0", "functions": ["hello"],
         "last_beat_s": 1.2},
        {"id": "a-much-longer-host-99-cd", "host": "a-much-longer-host", "pid": 99,
         "version": "0.1.0", "functions": ["hello", "a_longer_name"], "last_beat_s": 0.02},
        {"host": "", "functions": []},
    ]  # fmt: skip
    assert stats_text(Stats(0, functions, instances=instances)) + "\n" == STATS
    assert stats_text(Stats(0, [])) + "\n" == STATS_EMPTY


STATS = """\
FUNCTION        HIGH  DEFAULT  LOW  DELAYED  IN FLIGHT  DEAD  OLDEST  DONE/MIN  FAILED/MIN
hello              1       20    0        3       4/32     7   1m15s       120         1.5
a_longer_name*     0   123456    7        3          4     7       -      0.25        4322
a_longer_name: circuit breaker open on h:1
a_longer_name: 2 lease(s) expired, waiting for a reclaimer (a runtime died or stopped heartbeating)

TOTALS         COMPLETED  RETRIED  DEAD  CANCELLED  RECOVERED  STALE ACKS  PURGED  REQUEUED
hello                900        0     7          0          0       12345       0         0
a_longer_name          0        0     0          0          0           0       0         0

DONE/MIN, FAILED/MIN: completions, and retries + dead letters, in the last 60 s
OLDEST: the longest wait at the head of a lane; * not in the functions folder
runtime instances: those that beat in the last 15 s:
ID                        HOST                PID  VERSION  FUNCTIONS            LAST BEAT
h-1-ab                    h                   1    0.1.0    hello                1s
a-much-longer-host-99-cd  a-much-longer-host  99   0.1.0    hello,a_longer_name  20ms
?                                             ?    ?                             -
"""
STATS_EMPTY = """\
no functions: the functions folder has none; name some with --function

DONE/MIN, FAILED/MIN: completions, and retries + dead letters, in the last 60 s
OLDEST: the longest wait at the head of a lane; * not in the functions folder
runtime instances: those that beat in the last 15 s:
none
"""


def test_peek_tables() -> None:
    dead = [
        JobView("hello.1", "default", "dead", 3, 1, 7300.0, 1, 2, "timeout",
                "Traceback (most recent call last):\n  File ...\nValueError: " + "x" * 80,
                payload={"name": "y" * 300}),
        JobView("hello.22", "high", None, 12, 0, None, None, None, None, None,
                payload_error="no job record for this id"),
    ]  # fmt: skip
    assert peek_text(Peek("hello", "dlq", 0, 9, dead), 150) + "\n" == PEEK_DLQ
    waiting = [
        JobView("hello.3", "high", "queued", 0, 0, 0.5, 1, None, None, None, payload=[1, 2]),
        JobView("hello.4", "low", "queued", 1, 2, 75.0, 1, None, None, None, payload="hi"),
    ]  # fmt: skip
    assert peek_text(Peek("hello", "ready", 0, 2, waiting), 80) + "\n" == PEEK_READY
    assert peek_text(Peek("hello", "ready", 0, 0, []), 80) == (
        "hello: 0 waiting (high, default, low); showing 0, in claim order"
    )


PEEK_DLQ = """\
hello: 9 in the DLQ; showing 2, newest first
ID        LANE     ATT  REC  DEAD FOR  REASON   ERROR                                  PAYLOAD
hello.1   default    3    1  2h01m     timeout  Traceback (most recent call last): F…  {"name":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy…
hello.22  high      12    0  -         -        -                                      <no job record for this id>
"""  # noqa: E501
PEEK_READY = """\
hello: 2 waiting (high, default, low); showing 2, in claim order
ID       LANE  ATT  REC  WAITING  PAYLOAD
hello.3  high    0    0  500ms    [1,2]
hello.4  low     1    2  1m15s    "hi"
"""


def test_the_table_printer() -> None:
    rows = [("NAME", "N", "NOTE"), ("a", "1", ""), ("longer", "1234", "x")]
    assert table_lines(rows) == ["NAME    N     NOTE", "a       1", "longer  1234  x"]
    assert table_lines(rows, right=frozenset({1})) == [
        "NAME       N  NOTE",
        "a          1",
        "longer  1234  x",
    ]
    assert table_text([("ONLY",), ("",)]) == "ONLY\n"
    with pytest.raises(ValueError, match="zip"):
        table_lines([("A",), ("a", "b")])  # every row has the header's columns
