"""The file producer's walk (globs, priorities, ids) and the bench's percentile."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cli.bench import percentile
from runtime.cli.enqueue_dir import FileJob, file_job_id, walk


def make(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def test_walk_sorts_filters_and_prioritises(tmp_path: Path) -> None:
    make(tmp_path, "b.PDF", "a.txt", "sub/c.docx", "sub/d.tmp", "node_modules/x.js")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    jobs = list(
        walk(
            tmp_path,
            exclude=["*.tmp", "node_modules/*"],
            high_ext=[".pdf", "docx"],
            default_priority="low",
        )
    )
    rel = [(Path(j.path).relative_to(tmp_path).as_posix(), j.priority) for j in jobs]
    assert rel == [("a.txt", "low"), ("b.PDF", "high"), ("sub/c.docx", "high")]
    assert all(j.size > 0 and j.mtime > 0 for j in jobs)


def test_include_globs_match_names_or_relative_paths(tmp_path: Path) -> None:
    make(tmp_path, "a.txt", "b.md", "sub/c.txt")
    names = [Path(j.path).name for j in walk(tmp_path, include=["*.txt"])]
    assert names == ["a.txt", "c.txt"]
    only_sub = [Path(j.path).name for j in walk(tmp_path, include=["sub/*"])]
    assert only_sub == ["c.txt"]


def test_file_job_id_changes_only_with_the_file() -> None:
    job = FileJob("/data/a.txt", 10, 1700000000.5, "default")
    same = FileJob("/data/a.txt", 10, 1700000000.5, "high")
    assert file_job_id(job) == file_job_id(same)  # priority is not identity
    assert file_job_id(job) != file_job_id(FileJob("/data/a.txt", 11, 1700000000.5, "default"))
    assert file_job_id(job) != file_job_id(FileJob("/data/a.txt", 10, 1700000001.5, "default"))


@pytest.mark.parametrize(
    ("q", "expected"), [(50, 50.0), (95, 95.0), (99, 99.0), (100, 100.0), (1, 1.0)]
)
def test_percentile_nearest_rank(q: float, expected: float) -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, q) == expected
