"""A Redis Cluster of the test's own: 3 masters on loopback ports, from the installed
redis-server (Debian's 7.x when there is one: it refuses a script that touches keys of
another hash slot than its declared keys, as a managed cluster does), stopped by pid."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def redis_cluster_in(folder: str | Path, masters: int = 3) -> Iterator[str]:
    """Start ``masters`` cluster nodes in ``folder``, give each a share of the 16384 slots,
    join them, wait for ``cluster_state:ok`` on every node; yield the
    ``redis+cluster://127.0.0.1:p1,...`` URL; stop them by pid."""
    folder = Path(folder)
    ports = [_free_port() for _ in range(masters)]
    procs = []
    try:
        for i, port in enumerate(ports):
            node = folder / f"node{i}"
            shutil.rmtree(node, ignore_errors=True)
            node.mkdir(parents=True)
            procs.append(subprocess.Popen(
                [cluster_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(node)],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        clients = [redis.Redis(port=p, decode_responses=True) for p in ports]
        for c in clients:
            wait_until(lambda c=c: _pings(c), 10, "a cluster node")
        share = SLOTS // masters
        for i, c in enumerate(clients):
            last = SLOTS if i == masters - 1 else (i + 1) * share
            c.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        for c in clients[1:]:
            c.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
        wait_until(lambda: all(c.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                               and len(c.execute_command("CLUSTER NODES")) == masters for c in clients),
                   20, "the cluster to form")
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except redis.ConnectionError:
        return False
