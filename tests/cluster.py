"""A Redis Cluster of the test's own: 3 masters on loopback ports (and, when asked, a
replica of each), from the installed redis-server (Debian's 7.x when there is one: it
refuses a script that touches keys of another hash slot than its declared keys, as a
managed cluster does), stopped by pid."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from helpers import wait_until

SLOTS = 16384


def _free_port() -> int:
    """A loopback port free now, whose cluster bus port (+10000) is free too."""
    for port in random.sample(range(20000, 50000), 200):
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free pair of loopback ports")


def cluster_binary() -> str:
    """Debian's redis-server when installed (7.x), else the one the embedded default uses."""
    if os.path.exists("/usr/bin/redis-server"):
        return "/usr/bin/redis-server"
    from runtime.broker.embedded import redis_server_binary
    return redis_server_binary()


@dataclass
class Cluster:
    """The nodes of a running cluster: ``masters[i]`` serves the i-th share of the slots,
    ``replicas[i]`` (when started with replicas) replicates it. Ports of the nodes; their
    processes by port."""

    masters: list[int]
    replicas: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    argv: dict[int, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.masters + self.replicas)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def caught_up(self) -> bool:
        """Has every replica acknowledged all its master sent it?"""
        for port in self.masters:
            info = self.client(port).info("replication")
            offsets = [int(v["offset"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if len(offsets) < len(self.replicas) // len(self.masters) or (
                    offsets and min(offsets) < int(info["master_repl_offset"])):
                return False
        return True

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (by pid) and reap it."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again, as it was started (its nodes.conf, and its data
        when started with an append-only file)."""
        self.procs[port] = subprocess.Popen(self.argv[port], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _node_argv(folder: Path, port: int, node_timeout_ms: int, appendonly: bool) -> list[str]:
    node = folder / f"node{port}"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir(parents=True)
    return [cluster_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms),
            "--save", "", "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
            "--dir", str(node), "--logfile", "redis.log"]


@contextmanager
def cluster_in(folder: str | Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 15000,
               appendonly: bool = False) -> Iterator[Cluster]:
    """Start ``masters`` cluster nodes in ``folder`` and ``replicas`` replicas of each
    (CLUSTER REPLICATE), give each master a share of the 16384 slots, join them, wait for
    ``cluster_state:ok`` on every node and each replica in sync; yield the :class:`Cluster`;
    stop the nodes by pid. A replica takes over a master that stops answering for
    ``node_timeout_ms`` (Redis's ``cluster-node-timeout``). ``appendonly``: each node keeps
    its data in an append-only file (fsync always), so that a node restarted keeps it."""
    folder = Path(folder)
    ports = [_free_port() for _ in range(masters * (1 + replicas))]
    cluster = Cluster(ports[:masters], ports[masters:])
    try:
        for port in ports:
            cluster.argv[port] = _node_argv(folder, port, node_timeout_ms, appendonly)
            cluster.restart(port)
        clients = [cluster.client(p) for p in ports]
        for c in clients:
            wait_until(lambda c=c: _pings(c), 10, "a cluster node")
        share = SLOTS // masters
        for i, c in enumerate(clients[:masters]):
            last = SLOTS if i == masters - 1 else (i + 1) * share
            c.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        for c in clients[1:]:
            c.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
        wait_until(lambda: all(len(c.execute_command("CLUSTER NODES")) == len(ports) for c in clients),
                   20, "the nodes to meet")
        for i, c in enumerate(clients[masters:]):
            c.execute_command("CLUSTER REPLICATE", clients[i % masters].execute_command("CLUSTER MYID"))
        wait_until(lambda: all(c.execute_command("CLUSTER INFO")["cluster_state"] == "ok" for c in clients)
                   and all(_in_sync(c) for c in clients[masters:]), 30, "the cluster to form")
        yield cluster
    finally:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in cluster.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def redis_cluster_in(folder: str | Path, masters: int = 3) -> Iterator[str]:
    """:func:`cluster_in` without replicas; yields the ``redis+cluster://127.0.0.1:p1,...`` URL."""
    with cluster_in(folder, masters) as cluster:
        yield cluster.url


def _in_sync(replica: redis.Redis) -> bool:
    info = replica.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except redis.ConnectionError:
        return False
