"""`runtime enqueue-dir` and `runtime bench` against a real redis-server and runtime."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from runtime.cli.main import run
from tests.integration.conftest import MakeHarness

pytestmark = pytest.mark.integration

HANDLERS = """
    import msgspec
    from runtime import function

    class FileRef(msgspec.Struct, forbid_unknown_fields=True):
        path: str
        size: int | None = None
        mtime: float | None = None

    @function(concurrency=4)
    async def file_stats(ref: FileRef) -> int:
        return ref.size or 0

    @function
    async def echo(x: int) -> int:
        return x
"""


def tree(root: Path) -> Path:
    for rel, body in {
        "a.txt": "alpha",
        "b.pdf": "bravo",
        "sub/c.txt": "charlie",
        "sub/d.docx": "delta",
        "skip/e.txt": "echo",
        "f.log": "foxtrot",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return root


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = await asyncio.to_thread(run, list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def test_enqueue_dir_is_idempotent_and_prioritises_by_extension(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS, start=False)
    root = tree(tmp_path / "files")
    (tmp_path / "config").mkdir()
    common = ["--config", str(tmp_path / "config"), "enqueue-dir", str(root),
              "--function", "file_stats", "--redis", h.settings.redis.url,
              "--functions", str(h.registry.folder), "--exclude", "skip/*",
              "--exclude", "*.log", "--high-priority-ext", ".pdf,.docx", "--json"]  # fmt: skip
    code, out, err = await cli(capsys, *common, "--dry-run")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1]) == {
        "files": 4,
        "by_priority": {"high": 2, "default": 2, "low": 0},
        "dry_run": True,
    }
    assert await h.redis.dbsize() == 0  # a dry run writes nothing
    code, out, err = await cli(capsys, *common)
    assert code == 0, err
    first = json.loads(out)
    assert (first["enqueued"], first["already_known"]) == (4, 0)
    assert await h.redis.llen("{rt:file_stats}:ready:high") == 2
    assert await h.redis.llen("{rt:file_stats}:ready:default") == 2
    code, out, err = await cli(capsys, *common)
    again = json.loads(out)
    assert (again["enqueued"], again["already_known"]) == (0, 4)  # unchanged tree: nothing new
    (root / "a.txt").write_text("alpha, changed")
    os.utime(root / "a.txt", (1, 1))
    code, out, err = await cli(capsys, *common)
    assert json.loads(out)["enqueued"] == 1  # the changed file only
    h.start()
    for _ in range(200):
        if (await h.broker.stats("file_stats")).get("completed") == 5:
            break
        await asyncio.sleep(0.02)
    assert (await h.broker.stats("file_stats")).get("completed") == 5


async def test_enqueue_dir_refuses_a_missing_folder_and_unknown_function(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS, start=False)
    (tmp_path / "config").mkdir()
    base = ["--config", str(tmp_path / "config"), "enqueue-dir"]
    tail = ["--redis", h.settings.redis.url, "--functions", str(h.registry.folder)]
    code, _, err = await cli(capsys, *base, str(tmp_path / "nope"), "--function", "echo", *tail)
    assert code == 2 and "not a folder" in err
    code, _, err = await cli(capsys, *base, str(tmp_path), "--function", "ech", *tail)
    assert code == 2 and "unknown function 'ech'" in err
    code, _, err = await cli(capsys, *base, str(tmp_path), "--function", "echo", "--rate", "x")
    assert code == 2 and "invalid rate 'x'" in err


async def test_bench_output_shape(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS)
    (tmp_path / "config").mkdir()
    code, out, err = await cli(
        capsys, "--config", str(tmp_path / "config"), "bench", "--function", "echo",
        "--payload", "7", "--count", "50", "--rate", "500/s", "--json",
        "--redis", h.settings.redis.url, "--functions", str(h.registry.folder),
    )  # fmt: skip
    assert code == 0, err
    figures = json.loads(out)
    assert (figures["count"], figures["completed"], figures["dead"]) == (50, 50, 0)
    assert figures["unfinished"] == 0
    assert set(figures["latency_s"]) == {"p50", "p95", "p99", "max"}
    lat = figures["latency_s"]
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 5
    assert figures["throughput_per_s"] > 0


async def test_enqueue_dir_refuses_a_tree_outside_the_functions_root(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(HANDLERS, start=False)
    allowed = tree(tmp_path / "allowed")
    elsewhere = tree(tmp_path / "elsewhere")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.toml").write_text(f'[params.file_stats]\nroot = "{allowed}"\n')
    base = ["--config", str(tmp_path / "config"), "enqueue-dir"]
    tail = ["--function", "file_stats", "--redis", h.settings.redis.url,
            "--functions", str(h.registry.folder), "--json"]  # fmt: skip
    code, out, err = await cli(capsys, *base, str(elsewhere), *tail)
    assert (code, out) == (2, "")
    assert err == (
        f"error: {elsewhere}: {elsewhere} is outside the allowed root of file_stats, {allowed} "
        f"([params.file_stats] root = '{allowed}'): its handler would reject every file; "
        "enqueue a folder under that root, or change the root in the configuration the "
        "servers and this command read (RUNTIME_PARAMS__FILE_STATS__ROOT)\n"
    )
    assert await h.redis.dbsize() == 0  # refused before anything was enqueued
    code, out, err = await cli(capsys, *base, str(allowed / "sub"), *tail)
    assert code == 0, err
    assert json.loads(out)["enqueued"] == 2


async def test_a_rerun_after_dead_letters_says_so(
    make_harness: MakeHarness, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    h = await make_harness(
        HANDLERS.replace("return ref.size or 0", "raise Reject('outside the root')").replace(
            "from runtime import function", "from runtime import Reject, function"
        ),
        start=False,
    )
    root = tree(tmp_path / "files")
    (tmp_path / "config").mkdir()
    common = ["--config", str(tmp_path / "config"), "enqueue-dir", str(root),
              "--function", "file_stats", "--redis", h.settings.redis.url,
              "--functions", str(h.registry.folder), "--include", "*.txt"]  # fmt: skip
    code, out, err = await cli(capsys, *common)
    assert (code, err) == (0, "")
    assert out.startswith("3 file(s): 3 enqueued, 0 already known")
    assert "dead-lettered" not in out
    h.start()
    for _ in range(250):
        if (await h.broker.stats("file_stats")).get("dead") == 3:
            break
        await asyncio.sleep(0.02)
    assert (await h.broker.stats("file_stats")).get("dead") == 3
    code, out, err = await cli(capsys, *common)
    assert (code, err) == (0, "")
    first, second = out.splitlines()
    assert first.startswith("3 file(s): 0 enqueued, 3 already known")
    assert second == (
        "3 of the 3 already known are dead-lettered, and enqueueing them again does not run "
        "them: see why with `runtime peek file_stats --dlq --traceback`, then fix and "
        "`runtime requeue-dlq file_stats`"
    )
    code, out, err = await cli(capsys, *common, "--json")
    assert (json.loads(out)["already_known"], json.loads(out)["already_dead"]) == (3, 3)
