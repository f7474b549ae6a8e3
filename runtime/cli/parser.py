"""The ``runtime`` command's arguments: the whole argparse tree, built in one place.

One function a group of commands adds its subcommands, in the order ``runtime --help``
lists them: serving and functions, the operator's queue commands, deployments, then the
producer tools. What each command does lives in the module named after its group.
"""

from __future__ import annotations

import argparse

from runtime.cli.argtypes import (
    RATE_FORMS,
    argparse_type,
    parse_duration,
    parse_interval,
    parse_rate,
    positive_seconds,
    seconds_from_zero,
    whole_number_in,
)
from runtime.jobs.instants import instant_ms
from runtime.queue.dlq import MAX_BATCH
from runtime.version import DISTRIBUTION, UNKNOWN, package_version

DEFAULT_REQUEUE_RATE = "100/s"
DEFAULT_DEPLOY_WAIT_S = 10


class _VersionAction(argparse.Action):
    """``--version``: the installed package's version (pyproject.toml is its one source),
    looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            argparse.SUPPRESS,  # nothing stored: the parsed arguments stay as they were
            default=argparse.SUPPRESS,
            nargs=0,
            help="print the version and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        text = package_version()
        if text == UNKNOWN:
            text = f"unknown ({DISTRIBUTION} is not installed; pip install -e .)"
        print(f"runtime {text}")  # to stdout, as argparse's own version action does
        parser.exit()


SECONDS = argparse_type(seconds_from_zero)
POSITIVE_SECONDS = argparse_type(positive_seconds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runtime", description="Serverless-style functions on Redis")
    p.add_argument("--version", action=_VersionAction)
    p.add_argument("--config", metavar="DIR", help="config folder (default: ./config)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_function_commands(sub)
    _add_admin_commands(sub)
    _add_deploy_commands(sub)
    _add_tool_commands(sub)
    return p


def _add_function_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve``, ``check``, ``functions``, ``invoke``, ``job`` and ``config``."""
    s = sub.add_parser("serve", help="run the HTTP app and the dispatcher")
    s.add_argument("--functions", metavar="DIR", help="handler folder (default: functions)")
    s.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    # Its range is checked with the settings (http.port), naming the command line as source.
    s.add_argument("--port", type=int, help="HTTP port (default 8080)")
    s.add_argument("--redis", metavar="URL", help="Redis URL (default: embedded redis-server)")
    s.add_argument("--reload", action="store_true", help="hot-swap the folder's edits")

    c = sub.add_parser("check", help="import and validate every handler of a folder")
    c.add_argument("dir", nargs="?", help="handler folder (default: functions_dir)")

    f = sub.add_parser("functions", help="list the functions and their effective limits")
    f.add_argument("--functions", metavar="DIR", help="handler folder")

    i = sub.add_parser("invoke", help="run a function and print its result")
    i.add_argument("name")
    i.add_argument("payload", nargs="?", default="null", help="JSON payload (default: null)")
    i.add_argument("--async", dest="is_async", action="store_true", help="print the job id")
    i.add_argument("--timeout", type=POSITIVE_SECONDS, metavar="S", help="wait at most S")
    i.add_argument("--priority", choices=["high", "default", "low"])
    i.add_argument("--delay", type=SECONDS, metavar="S", help="start no earlier than S from now")
    i.add_argument("--job-id", help="your own job id (idempotent)")
    i.add_argument("--idempotency-key", help="the same key twice gives the same job")
    i.add_argument("--functions", metavar="DIR", help="handler folder (for validation)")
    i.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")

    j = sub.add_parser("job", help="show a job by id: state, attempts, result or error")
    j.add_argument("job_id", metavar="ID", help="the id `invoke --async` printed")
    j.add_argument("--wait", type=SECONDS, metavar="S", help="wait up to S for it to finish")
    j.add_argument("--json", action="store_true", help="print the job as JSON")
    j.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")

    cfg = sub.add_parser("config", help="show or check the effective configuration")
    cfg.add_argument("action", choices=["show", "check"])
    _add_control_commands(sub)


def _add_control_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``jobs`` (the run history) and ``cancel``."""
    instant = argparse_type(instant_ms)
    js = sub.add_parser("jobs", help="a function's finished runs, newest first")
    js.add_argument("--function", required=True, metavar="NAME", help="whose runs")
    js.add_argument("--state", choices=["completed", "cancelled", "dead"])
    js.add_argument("--reason", metavar="R", help="only this reason (dead: timeout, rejected, ...)")
    since = "finished since: an age (15m, 1h, 2d), unix seconds or ISO 8601"
    js.add_argument("--since", type=instant, metavar="WHEN", help=since)
    js.add_argument("--until", type=instant, metavar="WHEN", help="finished until (as --since)")
    js.add_argument("--limit", type=argparse_type(whole_number_in(1, 500)), default=50, metavar="N",
                    help="runs per page (default 50, at most 500)")  # fmt: skip
    js.add_argument("--cursor", metavar="C", help="the page after the one that printed C")
    js.add_argument("--json", action="store_true", help="print the page as JSON")
    js.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")

    cn = sub.add_parser("cancel", help="cancel a job: queued or delayed at once, running soon")
    cn.add_argument("job_id", metavar="ID", help="the job's id")
    cn.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")


def _add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``stats``, ``peek``, ``purge-dlq`` and ``requeue-dlq``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--functions", metavar="DIR", help="handler folder (names, caps)")
    common.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")
    dlq_filter = argparse.ArgumentParser(add_help=False)
    dlq_filter.add_argument(
        "--reason", action="append", metavar="R", help="only dead jobs with this reason (repeat)"
    )
    dlq_filter.add_argument(
        "--older-than",
        type=argparse_type(parse_duration),
        metavar="DURATION",
        help="only jobs dead-lettered longer ago than this (30m, 2h, 7d, 1h30m)",
    )
    dlq_filter.add_argument("--dry-run", action="store_true", help="show, change nothing")
    dlq_filter.add_argument("--json", action="store_true", help="print the report as JSON")

    st = sub.add_parser("stats", parents=[common], help="queues, in flight, DLQ and rates")
    st.add_argument(
        "--function",
        action="append",
        metavar="NAME",
        help="only this function (repeat); any name, even one not in the folder",
    )
    st.add_argument("--json", action="store_true", help="one JSON document (a line per refresh)")
    st.add_argument("--watch", action="store_true", help="refresh until interrupted")
    st.add_argument(
        "--interval",
        type=argparse_type(parse_interval),
        default=2.0,
        metavar="S",
        help="--watch refresh period (default 2)",
    )
    st.add_argument(
        "--iterations",
        type=argparse_type(whole_number_in(1, 10**9)),
        metavar="N",
        help="--watch: stop after N refreshes",
    )

    pk = sub.add_parser("peek", parents=[common], help="the next jobs, or the newest dead ones")
    pk.add_argument("function", metavar="FUNCTION")
    pk.add_argument("--dlq", action="store_true", help="the newest DLQ entries instead")
    pk.add_argument(
        "-n", "--count", type=argparse_type(whole_number_in(1, MAX_BATCH)), default=20, metavar="N"
    )
    pk.add_argument("--json", action="store_true", help="print the jobs as JSON")
    pk.add_argument(
        "--traceback", action="store_true", help="with each job, its last failure's traceback"
    )
    pk.add_argument(
        "--width",
        type=argparse_type(whole_number_in(20, 10_000)),
        metavar="COLUMNS",
        help="cut lines to this width (default: the terminal's)",
    )

    pg = sub.add_parser("purge-dlq", parents=[common, dlq_filter], help="delete dead jobs")
    target = pg.add_mutually_exclusive_group(required=True)
    target.add_argument("function", nargs="?", metavar="FUNCTION")
    target.add_argument("--all", action="store_true", help="every function of the folder")
    pg.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a tty)")

    rq = sub.add_parser(
        "requeue-dlq",
        parents=[common, dlq_filter],
        help="move dead jobs back to their ready lane, counters reset",
    )
    rq.add_argument("function", metavar="FUNCTION")
    rq.add_argument(
        "--limit",
        type=argparse_type(whole_number_in(1, 10**12)),
        metavar="N",
        help="at most N jobs",
    )
    rq.add_argument(
        "--rate",
        type=argparse_type(parse_rate),
        default=parse_rate(DEFAULT_REQUEUE_RATE),
        metavar="R/s",
        help=f"at most this fast (default {DEFAULT_REQUEUE_RATE})",
    )


def _add_deploy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``deploy``, ``deployments`` and ``rollback``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")
    common.add_argument("--json", action="store_true", help="print JSON")

    d = sub.add_parser(
        "deploy", parents=[common], help="validate a folder and publish it as a new version"
    )
    d.add_argument("dir", nargs="?", help="handler folder (default: functions_dir)")
    d.add_argument("-m", "--message", default="", help="a note kept with the version")
    d.add_argument("--force", action="store_true", help="publish even if nothing changed")
    _add_wait_flags(d)

    ls = sub.add_parser("deployments", parents=[common], help="list the published versions")
    ls.add_argument("-n", "--limit", type=argparse_type(whole_number_in(1, 10_000)), default=20,
                    metavar="N", help="newest N (20)")  # fmt: skip

    rb = sub.add_parser("rollback", parents=[common], help="make an earlier version active again")
    rb.add_argument("version", nargs="?", type=int, help="default: the one before the active")
    _add_wait_flags(rb)


def _add_wait_flags(command: argparse.ArgumentParser) -> None:
    """``deploy`` and ``rollback`` wait for the fleet's answer (docs/deploying.md)."""
    wait = command.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait",
        type=argparse_type(whole_number_in(1, 3600)),
        default=DEFAULT_DEPLOY_WAIT_S,
        metavar="S",
        help="wait up to S seconds for every instance to load it or refuse it "
        f"(default {DEFAULT_DEPLOY_WAIT_S}); exit 1 unless all loaded it",
    )
    wait.add_argument(
        "--no-wait", action="store_true", help="do not wait: nothing checks the fleet's answer"
    )


def _add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``enqueue-dir`` and ``bench``."""
    rate = argparse_type(parse_rate)
    e = sub.add_parser("enqueue-dir", help="enqueue one job per file of a tree (idempotent)")
    e.add_argument("tree", metavar="DIR", help="the tree to walk")
    e.add_argument("--function", required=True, help="the function to run on each file")
    e.add_argument("--include", action="append", metavar="GLOB", help="only matching paths")
    e.add_argument("--exclude", action="append", metavar="GLOB", help="skip matching paths")
    e.add_argument(
        "--high-priority-ext",
        default="",
        metavar=".pdf,.docx",
        help="extensions that go to the high lane (others: the function's priority)",
    )
    e.add_argument("--rate", type=rate, metavar="R", help=f"at most this fast: {RATE_FORMS}")
    e.add_argument("--dry-run", action="store_true", help="show what would be enqueued")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_tool_connection(e)

    b = sub.add_parser("bench", help="enqueue at a steady rate and measure latency")
    b.add_argument("--function", default="file_stats", help="function to run (default file_stats)")
    b.add_argument("--count", type=argparse_type(whole_number_in(1, 10**9)), default=1000,
                   help="jobs to send (default 1000)")  # fmt: skip
    b.add_argument("--rate", type=rate, default=parse_rate("100/s"), metavar="R",
                   help=f"send rate, {RATE_FORMS} (default 100/s)")  # fmt: skip
    b.add_argument("--payload", metavar="JSON", help="the payload of every job")
    b.add_argument("--payload-size", type=argparse_type(whole_number_in(1, 2**30)), metavar="BYTES",
                   help="size of the file each file_stats job reads (default 1024)")  # fmt: skip
    b.add_argument("--timeout", type=POSITIVE_SECONDS, default=120.0, metavar="S",
                   help="give up waiting after S seconds (default 120)")  # fmt: skip
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_tool_connection(b)


def _add_tool_connection(parser: argparse.ArgumentParser) -> None:
    """The tools' last two flags (after their own, as ``--help`` lists them)."""
    parser.add_argument("--functions", metavar="DIR", help="handler folder (for validation)")
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded one)")
