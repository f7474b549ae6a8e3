"""A real ``prometheus`` child for tests (Debian's package), and the PromQL read from
deploy/: rule expressions, dashboard queries, and the series selectors inside them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
MISSING = "needs promtool and prometheus (Debian: apt-get install prometheus)"

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$function": ".*"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


def rules() -> list[dict[str, Any]]:
    """Every rule of the rule files that prometheus.yml loads."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    out: list[dict[str, Any]] = []
    for name in config["rule_files"]:
        for group in yaml.safe_load((DEPLOY / "prometheus" / name).read_text())["groups"]:
            out.extend(group["rules"])
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query with Grafana's variables substituted) of every dashboard."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                out.append((f"{path.name}: {panel['title']}", expr))
    return out


def selectors(expr: str) -> set[str]:
    """The series selectors of a PromQL expression (``name{matchers}``), without the
    functions, keywords, grouping labels and range durations around them."""
    text = _GROUPING.sub(" ", re.sub(r"\[[^\]]*\]", " ", expr))
    found = set()
    for match in _SELECTOR.finditer(text):
        name = match.group(1)
        if name in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        found.add(name + (match.group(2) or ""))
    return found


class Prometheus:
    """``prometheus`` on a free loopback port with its TSDB in ``folder``; stopped by pid."""

    def __init__(self, folder: Path, targets: list[str], rule_files: list[Path]) -> None:
        assert PROMETHEUS is not None, MISSING
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": "runtime", "static_configs": [{"targets": targets}]},
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = folder / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={folder / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}{path}{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"prometheus not ready in {timeout_s}s\n{self.log.read_text()}")

    def series(self, expr: str) -> int:
        """How many series the instant query returns (an error in the query fails)."""
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return len(answer["data"]["result"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
