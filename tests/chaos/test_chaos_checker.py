"""The chaos suite's bookkeeping, without processes or sockets: the witness, the in-flight
bound of a fault, the figures, the table and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.suite import __main__ as cli
from chaos.suite.checker import Fault, Figures, crashes_explained, figures
from chaos.suite.fleet import Fleet, LogLine, ReadySample, ReadyWatch
from chaos.suite.report import ScenarioReport, table
from chaos.suite.scenarios import CI_SUBSET, CLUSTER_GROUP, CLUSTER_SUBSET, SCENARIOS
from chaos.suite.scenarios.redis_limits import flags_policy, policy_errors
from chaos.suite.stage import Check
from chaos.suite.witness import Run, Witness, handler_source
from runtime.jobs.records import JobRecord


def witness(tmp_path: Path, *lines: str) -> Witness:
    path = tmp_path / "witness.log"
    path.write_text("".join(line + "\n" for line in lines))
    return Witness(path)


def record(job: str, state: str = "completed", enq: int = 1000, end: int = 1100) -> JobRecord:
    reason = "worker_crashed" if state == "dead" else None
    return JobRecord(job, "work", state, "default", 0, 0, enq, None, end, reason=reason)


def test_runs_pair_each_start_with_the_next_finish_of_the_same_pid(tmp_path: Path) -> None:
    w = witness(
        tmp_path,
        "start a 1 10 1.0",
        "start b 1 10 1.1",
        "finish a 1 10 1.2",
        "start b 1 20 3.0",  # b re-run elsewhere: pid 10 died holding it
        "finish b 1 20 3.1",
        "start c 1 10 1.3 torn",  # malformed lines are skipped
    )
    assert sorted(w.runs(), key=lambda r: (r.job, r.pid)) == [
        Run("a", 10, 1.0, 1.2),
        Run("b", 10, 1.1, None),
        Run("b", 20, 3.0, 3.1),
    ]
    assert w.starts() == {"a": 1, "b": 2}
    assert w.running(10) == [Run("b", 10, 1.1, None)]


def test_in_flight_counts_running_and_just_finished_jobs_of_the_hit_pids() -> None:
    runs = [
        Run("running", 10, 1.0, None),
        Run("just-done", 10, 1.0, 1.9),  # finished 0.1 s before: its settle may not have landed
        Run("long-done", 10, 1.0, 1.5),
        Run("other-pid", 20, 1.0, None),
        Run("after", 10, 2.5, None),  # started after the fault ended
    ]
    fault = Fault("kill", 2.0, 2.0, frozenset({10}))
    assert fault.in_flight(runs) == {"running", "just-done"}
    everyone = Fault("redis", 2.0, 3.0)
    assert everyone.in_flight(runs) == {"running", "just-done", "other-pid", "after"}


def test_figures_count_loss_reruns_and_double_completions(tmp_path: Path) -> None:
    w = witness(
        tmp_path,
        "start a 1 10 1.0",
        "start b 1 10 1.0",
        "start c 1 20 1.0",
        "finish c 1 20 1.1",
        "start c 1 20 4.0",  # a re-run no fault explains
        "finish c 1 20 4.1",
        "start a 1 20 3.0",
        "finish a 1 20 3.1",
    )
    found = {
        "a": record("a", end=3100),
        "b": record("b", state="running"),
        "c": record("c", end=4100),
    }
    stats = {"work": {"completed": 3, "ready_high": 0, "ready_default": 1, "ready_low": 0,
                      "in_flight": 0, "delayed": 0, "recovered": 2}}  # fmt: skip
    f = figures(
        accepted=dict.fromkeys(found, 0.0),
        found=found,
        stats=stats,
        completed_in_redis=2,
        witness=w,
        faults=[Fault("kill", 2.0, 2.0, frozenset({10}))],
    )
    assert (f.accepted, f.completed, f.lost) == (3, 2, 1)
    assert f.lost_jobs == ["b: running"]
    assert (f.extra_starts, f.bound) == (2, 2)  # a and b were in flight at the kill
    assert f.unexplained == ["c"]
    assert f.double_completions == 1
    assert f.rerun_finishes == 1
    assert f.leftovers == {"ready": 1, "leased": 0, "delayed": 0}
    assert f.recovery_s == 1.1  # first completion after the heal at 2.0: a at 3.1
    assert f.hit_done_s is None  # b, hit by the kill, never ended


def test_a_fault_that_promises_no_rerun_adds_nothing_to_the_bound(tmp_path: Path) -> None:
    w = witness(tmp_path, "start a 1 10 1.0", "start a 1 20 3.0", "finish a 1 20 3.1")
    f = figures(
        accepted={"a": 0.0},
        found={"a": record("a", end=3100)},
        stats={},
        completed_in_redis=1,
        witness=w,
        faults=[Fault("drain", 2.0, 2.5, frozenset({10}), allows_reruns=False)],
    )
    assert (f.extra_starts, f.bound, f.unexplained) == (1, 0, ["a"])
    assert f.hit_done_s == 1.1


@pytest.mark.parametrize(
    ("dead", "died", "ok"),
    [({}, 0, True), ({"worker_crashed": 2}, 1, True), ({"worker_crashed": 2}, 0, False),
     ({"handler_error": 3}, 0, True)],
)  # fmt: skip
def test_worker_crashed_needs_a_dead_worker(dead: dict[str, int], died: int, ok: bool) -> None:
    f = Figures(dead=dead, dead_runtimes=died)
    assert crashes_explained(f)[0] is ok


async def test_ready_since_waits_for_every_runtime_to_answer_200(tmp_path: Path) -> None:
    watch = ReadyWatch(Fleet(tmp_path, tmp_path, tmp_path))
    watch.samples += [
        ReadySample(9.0, "rt0", 1, 200, {}),  # before the heal: does not count
        ReadySample(10.2, "rt0", 1, 503, {}),
        ReadySample(10.4, "rt1", 2, 200, {}),
        ReadySample(11.5, "rt0", 1, 200, {}),
    ]
    assert await watch.ready_since([1, 2], 10.0, 0) == 1.5
    assert await watch.ready_since([1, 2], 11.6, 0) is None


def test_an_evicting_policy_counts_only_when_redis_config_fails_naming_it() -> None:
    failing = {"ok": False, "error": "maxmemory-policy is allkeys-lru: jobs can be evicted"}
    body = {"status": "unready", "checks": {"redis": {"ok": True}, "redis_config": failing}}
    assert flags_policy(ReadySample(1.0, "rt0", 1, 503, body))
    assert not flags_policy(ReadySample(1.0, "rt0", 1, 200, body))
    other = {"checks": {"redis_config": {"ok": False, "error": "appendonly no"}}}
    assert not flags_policy(ReadySample(1.0, "rt0", 1, 503, other))
    assert not flags_policy(ReadySample(1.0, "rt0", 1, 503, {"checks": "not a dict"}))


def test_policy_errors_are_error_lines_about_the_policy_in_any_case() -> None:
    lines = [
        LogLine(2.0, "error", "Redis maxmemory-policy is allkeys-lru; set noeviction"),
        LogLine(2.0, "warning", "maxmemory-policy allkeys-lru accepted (allow_eviction)"),
        LogLine(0.5, "ERROR", "maxmemory-policy allkeys-lru"),  # before `since`
        LogLine(2.0, "error", "something else"),
    ]
    assert policy_errors(lines, 1.0) == [lines[0].message]


def test_handler_source_writes_the_witness_path(tmp_path: Path) -> None:
    source = handler_source(tmp_path / "w.log")
    compile(source, "chaos_handlers.py", "exec")
    assert repr(str(tmp_path / "w.log")) in source


def test_table_has_a_row_per_scenario_and_a_verdict() -> None:
    ok = ScenarioReport(1, "baseline", "", 1.0, None, [Check("ran", True)])
    bad = ScenarioReport(10, "empty", "", 2.0, None, [Check("x", False)], known_gap="later")
    lines = table([ok, bad]).splitlines()
    assert len(lines) == 4
    assert lines[2].split()[-1] == "FAIL"  # no figures: the scenario did not finish
    assert lines[3].endswith("KNOWN GAP")
    assert "ready s" in lines[0]


@pytest.mark.parametrize(
    "argv",
    [["--only", "99"], ["--only", "x"], ["--only", "1", "--ci"], ["--cluster", "--only", "15"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(SCENARIOS) == 17
    assert [line.split()[0] for line in out if " cluster " in line] == ["15", "16", "17"]


def test_the_cluster_group_is_out_of_the_single_node_ci_subset() -> None:
    assert set(CLUSTER_GROUP) == {15, 16, 17}
    assert set(CLUSTER_SUBSET) == {15, 16}  # 17 is a known gap, kept out of CI
    assert not set(CI_SUBSET) & set(CLUSTER_GROUP)  # test_chaos_suite runs those on a proxy
