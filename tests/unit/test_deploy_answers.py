"""The fleet's answer to a deploy, without Redis: what counts as an answer to *this*
activation, how it prints, and the flags that ask for it."""

from __future__ import annotations

import pytest

from runtime.cli.deploy_text import confirmation_text, fleet_text, progress_line
from runtime.cli.parser import build_parser
from runtime.deploy.fleet import Confirmation, FleetAnswer
from runtime.deploy.store import InstanceStatus


def test_an_old_refusal_of_the_same_version_is_not_an_answer_to_a_new_activation() -> None:
    status = InstanceStatus("web-1", "web", 1, loaded=6, refused={7: "bad key"})
    status.refused_activation = {7: 1}
    assert status.answer(7, 1) == "refused"
    assert status.answer(7, 2) is None  # `rollback 7` asked again: not answered yet
    assert status.answer(6, 3) == "accepted"
    assert InstanceStatus("web-2", "web", 2).answer(7, 1) is None


def test_the_fleet_answer_names_who_refused_and_who_did_not_answer() -> None:
    answer = FleetAnswer(
        7,
        accepted=["a"],
        refused={"b": "signature does not verify"},
        pending=["c"],
        wait_s=10,
        elapsed_s=10.004,
    )
    text = fleet_text(answer)
    assert text.splitlines()[0] == "1 of 3 accepted version 7 (answers in 10.00 s)"
    assert "  b refused: signature does not verify" in text
    assert "did not answer within 10 s" in text and text.endswith(": c")
    assert not answer.is_accepted
    assert fleet_text(FleetAnswer(7, accepted=["a", "b"])).startswith("2 of 2 accepted")
    assert FleetAnswer(7).is_accepted and "no live instance follows" in fleet_text(FleetAnswer(7))
    put_back = confirmation_text(Confirmation(answer, reverted_to=6))
    assert put_back.endswith("version 7 was refused: version 6 is active again "
                              "(runtimes that loaded 7 switch back)")  # fmt: skip
    assert progress_line("refused", "b", "line one\nline two") == "  b: refused: line one"


@pytest.mark.parametrize(
    ("argv", "wait", "no_wait"),
    [
        (["deploy"], 10, False),
        (["deploy", "--wait", "3"], 3, False),
        (["rollback", "4", "--no-wait"], 10, True),
    ],
)
def test_wait_flags(argv: list[str], wait: int, no_wait: bool) -> None:
    args = build_parser().parse_args(argv)
    assert (args.wait, args.no_wait) == (wait, no_wait)


@pytest.mark.parametrize("argv", ["deploy --wait 0", "deploy --wait x", "rollback --wait -1",
                                  "deploy --wait 2 --no-wait"])  # fmt: skip
def test_bad_wait_flags_are_usage_errors(argv: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv.split())
    assert stopped.value.code == 2
    assert "--wait" in capsys.readouterr().err
