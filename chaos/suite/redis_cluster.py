"""A real Redis Cluster for the chaos suite and the tests: ``redis-server`` children in
cluster mode on free loopback ports (3 masters, and one replica each when asked), joined
with ``redis-cli --cluster create``, stopped by pid; their folders are removed at the end
unless they were given (``root``). ``tests/redis_cluster.py`` re-exports it for
``tests/cluster/``."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NODE_TIMEOUT_MS = 2000
START_TIMEOUT_S = 10.0


def _wait_redis(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the redis-server answering on ``port`` is ``process`` (a PING alone would take
    another node's answer for this one's: a node whose port another already holds exits)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        if server_pid(port) == process.pid:
            return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s")


def server_pid(port: int, timeout_s: float = 0.3) -> int | None:
    """The process id of the redis-server answering on ``port`` (``INFO server``), or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"INFO server\r\n")
            data = b""
            while b"\r\nprocess_id:" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\nprocess_id:", 1)[1].split(b"\r\n", 1)[0]
    return int(line) if line.isdigit() else None


_CHOSEN: set[int] = set()  # ports handed out by this process: never the same one twice


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too, both below
    the kernel's ephemeral range (32768 and up): an outgoing connection of another process
    cannot take either between this check and the node's bind."""
    for _ in range(200):
        port = random.randrange(20_000, 22_768)  # noqa: S311 — a port to try, not a secret
        with contextlib.ExitStack() as stack:
            try:
                if port in _CHOSEN:
                    continue  # another node of this process may not have bound it yet
                for p in (port, port + 10_000):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            _CHOSEN.add(port)
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode:
    def __init__(self, directory: Path, binary: str) -> None:
        self.directory = directory
        self.binary = binary
        self.port = free_cluster_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0",  # any replica may take over
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        is_new = not (self.directory / "nodes.conf").exists()
        for attempt in range(3):
            self.process = subprocess.Popen(  # noqa: S603 — argv is the redis-server found on PATH plus our own settings, no shell
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
            )
            try:
                _wait_redis(self.port, self.process)
                return
            except RuntimeError:
                self.process.kill()
                self.process.wait(timeout=10)
                self.process = None
                if not is_new or attempt == 2:
                    raise  # a restarted node keeps its port: it is in the cluster's map
                # a new node whose port was taken meanwhile (it exits at once): another
                self.port = free_cluster_port()
                args[args.index("--port") + 1] = str(self.port)
                (self.directory / "nodes.conf").unlink(missing_ok=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused one could not exit
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=10)
        self.process = None

    def signal(self, sig: int) -> None:
        if self.process is not None:
            os.kill(self.process.pid, sig)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class RedisCluster:
    """3 masters (and 3 replicas if ``replicas``); ``url`` is the runtime's cluster URL."""

    def __init__(self, *, replicas: bool = False, root: Path | None = None) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError(
                "redis-server is not installed: run ./scripts/test, which installs it"
            )
        self.cli = cli
        self.is_own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        count = 6 if replicas else 3
        self.nodes = [ClusterNode(self.root / f"n{i}", binary) for i in range(count)]
        self.replicas = replicas

    @property
    def url(self) -> str:
        seeds = ",".join(n.address for n in self.nodes if n.process is not None)
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            args = [self.cli, "--cluster", "create", *(n.address for n in self.nodes)]
            if self.replicas:
                args += ["--cluster-replicas", "1"]
            subprocess.run(  # noqa: S603 — redis-cli found on PATH, our own arguments
                [*args, "--cluster-yes"], check=True, capture_output=True, timeout=60
            )
            self.wait_ok()
            if self.replicas:
                self.wait_replicas()  # a replica promoted before its first sync is empty
        except BaseException:
            self.stop()
            raise

    def info(self, node: ClusterNode, *command: str) -> str:
        done = subprocess.run(  # noqa: S603 — redis-cli found on PATH, our own arguments
            [self.cli, "-p", str(node.port), *command],
            capture_output=True, timeout=10, text=True,
        )  # fmt: skip
        return done.stdout

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on 3 masters."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if n.process is not None]
            states = [self.info(n, "cluster", "info") for n in live]
            if all("cluster_state:ok" in s for s in states) and all(
                self._masters_with_slots(n) == 3 for n in live
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"cluster not ok in {timeout_s}s: {states}")

    def _masters_with_slots(self, node: ClusterNode) -> int:
        return len(self._slot_owners(node))

    def _slot_owners(self, node: ClusterNode) -> dict[str, list[tuple[int, int]]]:
        """address -> slot ranges of each healthy master, as ``node`` sees them."""
        owners: dict[str, list[tuple[int, int]]] = {}
        for line in self.info(node, "cluster", "nodes").splitlines():
            parts = line.split(" ")  # id addr@cport flags master ping pong epoch link slots..
            flags = parts[2].split(",")
            if "master" not in flags or "fail" in flags or len(parts) <= 8:
                continue
            spans = []
            for span in parts[8:]:
                if not span.startswith("["):
                    low, _, high = span.partition("-")
                    spans.append((int(low), int(high or low)))
            owners[parts[1].split("@")[0]] = spans
        return owners

    def masters(self) -> set[str]:
        """Addresses of the masters serving slots now."""
        return set(self._slot_owners(self.live()[0]))

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process is not None]

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        lines = [line.split(" ") for line in self.info(master, "cluster", "nodes").splitlines()]
        master_id = next(p[0] for p in lines if "myself" in p[2])
        address = next(p[1].split("@")[0] for p in lines if "slave" in p[2] and p[3] == master_id)
        return next(n for n in self.nodes if n.address == address)

    def move_slot(self, key: str, target: ClusterNode) -> None:
        """Migrate ``key``'s slot, with its keys, to the master ``target`` (what
        ``redis-cli --cluster reshard`` does for one slot)."""
        source = self.owner(key)
        slot = self.info(source, "cluster", "keyslot", key).strip()
        source_id = self.info(source, "cluster", "myid").strip()
        target_id = self.info(target, "cluster", "myid").strip()
        self.info(target, "cluster", "setslot", slot, "importing", source_id)
        self.info(source, "cluster", "setslot", slot, "migrating", target_id)
        while keys := self.info(source, "cluster", "getkeysinslot", slot, "100").split():
            self.info(source, "migrate", "127.0.0.1", str(target.port), "", "0", "5000",
                      "KEYS", *keys)  # fmt: skip
        for node in (target, source, *self.live()):
            self.info(node, "cluster", "setslot", slot, "node", target_id)

    def owner(self, key: str) -> ClusterNode:
        """The master serving ``key``'s slot now (as the first live node sees it)."""
        first = self.live()[0]
        slot = int(self.info(first, "cluster", "keyslot", key).strip())
        for address, spans in self._slot_owners(first).items():
            if any(low <= slot <= high for low, high in spans):
                return next(n for n in self.nodes if n.address == address)
        raise AssertionError(f"no master serves slot {slot}")

    def wait_promoted(self, victim: ClusterNode, timeout_s: float = 30.0) -> float:
        """Until a replica of the dead ``victim`` serves its slots, as every live node sees
        it. (Restarting a master without persistence before that would come back empty as
        the master of its slots, and its replica would copy the empty data set.) Returns
        the monotonic time the first live node saw it (polled every ~20 ms per node)."""
        deadline = time.monotonic() + timeout_s
        first: float | None = None
        while time.monotonic() < deadline:
            views = [self._slot_owners(n) for n in self.live()]
            promoted = [len(v) == 3 and victim.address not in v for v in views]
            if any(promoted) and first is None:
                first = time.monotonic()
            if all(promoted):
                return first if first is not None else time.monotonic()
            time.sleep(0.02)
        raise AssertionError(f"{victim.address} not replaced in {timeout_s}s")

    def wait_replicas(self, timeout_s: float = 30.0) -> None:
        """Until every master has a replica in sync (``master_link_status:up``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            roles = [self.info(n, "info", "replication") for n in self.live()]
            replicas = [r for r in roles if "role:slave" in r]
            if len(replicas) == 3 and all("master_link_status:up" in r for r in replicas):
                return
            time.sleep(0.1)
        raise AssertionError(f"replicas not in sync in {timeout_s}s")

    def flush(self) -> None:
        for node in self.nodes:
            if node.process is not None and "role:master" in self.info(node, "info", "replication"):
                self.info(node, "flushall")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill(signal.SIGTERM)
        if self.is_own_root:
            shutil.rmtree(self.root, ignore_errors=True)
