"""A private Redis Sentinel set-up on loopback: one primary, replicas and three sentinels.

Debian's redis-server, on free high ports, data and config files in a temporary folder;
nothing touches the machine's Redis on 6379. Used by the failover fault test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

MASTER_NAME = "zenith-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout}s")


@dataclass
class Node:
    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        path = self.directory / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class SentinelCluster:
    """`replicas` replicas of one primary, watched by `sentinels` sentinels (quorum 2, or 1)."""

    root: Path
    replicas: int = 2
    sentinels: int = 3
    down_after_ms: int = 2000
    failover_timeout_ms: int = 10000
    master_name: str = MASTER_NAME
    redis_options: list[str] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    watchers: list[Node] = field(default_factory=list)

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    # -- start and stop -----------------------------------------------------------------
    def _spawn(self, node: Node, config: str, *extra: str) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        path = node.directory / "redis.conf"
        path.write_text(config)
        command = [shutil.which("redis-server") or "redis-server", str(path), *extra]
        node.process = subprocess.Popen(
            command,
            cwd=node.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _node_config(self, node: Node, primary: Node | None) -> str:
        lines = [
            f"port {node.port}",
            "bind 127.0.0.1",
            f"dir {node.directory}",
            "logfile log.txt",
            'save ""',
            "appendonly no",
            "daemonize no",
            # A replica must see the new primary's writes as its own (no stale reads).
            "replica-read-only yes",
            # Let the dying primary's loss be measured, not hidden: no disk, async replication.
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            *self.redis_options,
        ]
        if primary is not None:
            lines.append(f"replicaof 127.0.0.1 {primary.port}")
        return "\n".join(lines) + "\n"

    def start(self) -> SentinelCluster:
        self.nodes = [
            Node(name=f"redis-{i}", port=free_port(), directory=self.root / f"redis-{i}")
            for i in range(1 + self.replicas)
        ]
        primary = self.nodes[0]
        for node in self.nodes:
            self._spawn(node, self._node_config(node, None if node is primary else primary))
        for node in self.nodes:
            _wait(lambda n=node: n.client().ping(), 15, f"{node.name} did not answer")
        _wait(lambda: self._replicas_in_sync(primary), 30, "replicas not in sync")
        self.watchers = [
            Node(name=f"sentinel-{i}", port=free_port(), directory=self.root / f"sentinel-{i}")
            for i in range(self.sentinels)
        ]
        quorum = min(2, self.sentinels)
        for watcher in self.watchers:
            config = "\n".join(
                [
                    f"port {watcher.port}",
                    "bind 127.0.0.1",
                    f"dir {watcher.directory}",
                    "logfile log.txt",
                    "daemonize no",
                    f"sentinel monitor {self.master_name} 127.0.0.1 {primary.port} {quorum}",
                    f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {self.master_name} 1",
                ]
            )
            self._spawn(watcher, config + "\n", "--sentinel")
        for watcher in self.watchers:
            _wait(
                lambda w=watcher: (
                    self._sentinel_view(w)[1] >= self.sentinels - 1
                    and self._sentinel_view(w)[2] >= self.replicas
                ),
                30,
                f"{watcher.name} did not see the whole set-up",
            )
        return self

    def _replicas_in_sync(self, primary: Node) -> bool:
        """Every replica connected and past its first full sync ("online", not "wait_bgsave")."""
        info = primary.client().info("replication")
        states = [
            value.get("state")
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict)
        ]
        return len(states) == self.replicas and all(state == "online" for state in states)

    def _sentinel_view(self, watcher: Node) -> tuple[str, int, int]:
        """(primary address, other sentinels, replicas) as one sentinel sees them."""
        master = watcher.client().execute_command("SENTINEL", "MASTER", self.master_name)
        if isinstance(master, list):
            master = dict(zip(master[::2], master[1::2], strict=False))
        decoded = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in master.items()
        }
        return (
            f"{decoded['ip']}:{decoded['port']}",
            int(decoded["num-other-sentinels"]),
            int(decoded["num-slaves"]),
        )

    def stop(self) -> None:
        for node in [*self.watchers, *self.nodes]:
            if node.alive():
                assert node.process is not None
                node.process.terminate()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=10)

    # -- what tests use -------------------------------------------------------------------
    def url(self, db: int = 0) -> str:
        """The sentinel:// URL Zenith is configured with."""
        return ";".join(f"sentinel://127.0.0.1:{w.port}" for w in self.watchers) + f"/{db}"

    def primary(self) -> Node:
        """The node the sentinels currently name as primary."""
        for watcher in self.watchers:
            with contextlib.suppress(redis.RedisError, OSError):
                address = self._sentinel_view(watcher)[0]
                return next(n for n in self.nodes if n.address == address)
        raise RuntimeError("no sentinel answered")

    def kill_primary(self) -> Node:
        """SIGKILL the current primary: a crash, no shutdown, no final save."""
        node = self.primary()
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=10)
        return node

    def wait_for_new_primary(self, old: Node, timeout: float = 60) -> Node:
        """Wait until every sentinel names a live primary other than `old` and it answers."""

        def promoted() -> bool:
            views = {self._sentinel_view(w)[0] for w in self.watchers}
            if len(views) != 1 or old.address in views:
                return False
            node = next(n for n in self.nodes if n.address in views)
            return node.client().info("replication")["role"] == "master"

        _wait(promoted, timeout, "no replica was promoted", interval=0.1)
        return self.primary()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log()[-3000:]}" for n in [*self.nodes, *self.watchers])
