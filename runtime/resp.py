"""A minimal Redis client for the watchdog (runtime.watch): the standard library only, so
that the watchdog's memory stays small. RESP2 over TCP, unix sockets or TLS, with AUTH
and SELECT; Sentinel to find the master (:class:`Resp`); and a Redis Cluster
(:class:`Cluster`), each script call sent to the master of the hash slot of its first key.

The watchdog runs as a script (``python -I -S runtime/watch.py``), which loads this file
beside it; the worker side imports it as ``runtime.resp``.
"""

from __future__ import annotations

import binascii
import socket

TYPE_CHECKING = False  # typing is not imported at run time: it is ~1 MB of the watchdog's RSS
if TYPE_CHECKING:
    from typing import Any

#: Hash slots of a Redis Cluster.
SLOTS = 16384


class RedisError(Exception):
    """An error reply, or a connection that failed."""


def tls_context(conf: dict[str, Any]) -> Any:
    """The ssl.SSLContext of a TLS connection, as redis-py makes it for the worker's own
    connections: the server's certificate verified unless ``ssl_cert_reqs`` is "none"
    ("optional": verified when given), against ``ssl_ca_certs`` when set (else the
    system's), its host name checked unless ``ssl_check_hostname`` is false."""
    import ssl
    ctx = ssl.create_default_context(cafile=conf.get("ssl_ca_certs") or None)
    reqs = conf.get("ssl_cert_reqs")
    ctx.check_hostname = bool(conf.get("ssl_check_hostname", True)) and reqs not in (
        "none", "optional", ssl.CERT_NONE, ssl.CERT_OPTIONAL)
    if reqs in ("none", ssl.CERT_NONE):
        ctx.verify_mode = ssl.CERT_NONE
    elif reqs in ("optional", ssl.CERT_OPTIONAL):
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class Resp:
    """A minimal Redis client: one connection, one command at a time (RESP2)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.sock: socket.socket | None = None
        self.buf = b""
        self.addr: tuple[str, int] | None = None  # the master's, with Sentinels

    def _open(self) -> None:
        c = self.conf
        timeout = float(c.get("timeout_s", 5.0))
        if c.get("path"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(c["path"])
        else:
            if c.get("sentinels"):
                host, port = self.addr = self._master(c["sentinels"], c["service"], timeout)
            else:
                host, port = c["host"], int(c["port"])
            sock = socket.create_connection((host, port), timeout)
            if c.get("ssl"):
                sock = tls_context(c).wrap_socket(sock, server_hostname=host)
        self.sock, self.buf = sock, b""
        if c.get("password"):
            self.call("AUTH", *([c["username"]] if c.get("username") else []), c["password"])
        if c.get("db"):
            self.call("SELECT", str(c["db"]))

    def follow_master(self) -> None:
        """With Sentinels: ask them which server is the master; when it moved, drop the
        connection (the next call opens one to the new master). Redis's own READONLY
        comes only when the old master is demoted, seconds later."""
        c = self.conf
        if not c.get("sentinels") or self.sock is None:
            return
        try:
            now = self._master(c["sentinels"], c["service"], float(c.get("timeout_s", 5.0)))
        except (OSError, RedisError):
            return
        if now != self.addr:
            self.close()

    @staticmethod
    def _master(sentinels: list[list[Any]], service: str, timeout: float) -> tuple[str, int]:
        for host, port in sentinels:
            s = Resp({"host": host, "port": port, "timeout_s": timeout})
            try:
                addr = s.call("SENTINEL", "get-master-addr-by-name", service)
            except (OSError, RedisError):
                continue
            finally:
                s.close()
            if addr:
                return str(addr[0]), int(addr[1])
        raise RedisError(f"no Sentinel names a master for {service!r}")

    def call(self, *args: str) -> Any:
        """Send one command and return its reply; raises RedisError or OSError (the
        connection is dropped: the next call opens another)."""
        try:
            if self.sock is None:
                self._open()
            assert self.sock is not None
            out = [b"*%d\r\n" % len(args)]
            for a in args:
                b = a.encode()
                out.append(b"$%d\r\n%s\r\n" % (len(b), b))
            self.sock.sendall(b"".join(out))
            return self._reply()
        except OSError:
            self.close()
            raise

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _more(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise OSError("connection closed by the server")
        self.buf += data

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._more()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:40]!r}")

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None


def keyslot(key: str) -> int:
    """The Redis Cluster hash slot of ``key``: CRC16 (XMODEM: binascii.crc_hqx) of its hash
    tag (what the first braces hold, when not empty) or of the whole key, mod 16384."""
    b = key.encode()
    start = b.find(b"{")
    if start >= 0:
        end = b.find(b"}", start + 1)
        if end > start + 1:
            b = b[start + 1:end]
    return binascii.crc_hqx(b, 0) % SLOTS


def _address(text: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host too) as (host, port)."""
    host, _, port = text.rpartition(":")
    return host, int(port)


class Cluster:
    """A minimal client of a Redis Cluster (``conf["cluster"]``: [host, port] of some of
    its nodes; the other settings as :class:`Resp` takes them): one :class:`Resp` per
    master; an EVAL goes to the master of the slot of its first key, by the slot map
    CLUSTER SLOTS gives, asked again after a MOVED reply or a connection that failed (a
    resharding, a failover); an ASK reply is followed once (ASKING)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.nodes: dict[tuple[str, int], Resp] = {}
        self.slots: list[tuple[int, int, tuple[str, int]]] = []  # (first, last, master)

    def _node(self, addr: tuple[str, int]) -> Resp:
        r = self.nodes.get(addr)
        if r is None:
            r = self.nodes[addr] = Resp({**self.conf, "cluster": None, "host": addr[0], "port": addr[1]})
        return r

    def _refresh(self) -> None:
        """Learn the slot map from the first node that answers (known masters, then the
        configured nodes). Raises RedisError when none does."""
        for addr in [*self.nodes, *(tuple(a) for a in self.conf["cluster"])]:
            host, port = str(addr[0]), int(addr[1])
            try:
                rows = self._node((host, port)).call("CLUSTER", "SLOTS")
            except (OSError, RedisError):
                continue
            self.slots = [(int(r[0]), int(r[1]), (str(r[2][0]) or host, int(r[2][1]))) for r in rows]
            return
        raise RedisError("no node of the cluster answers CLUSTER SLOTS")

    def _master(self, slot: int) -> tuple[str, int]:
        if not self.slots:
            self._refresh()
        for first, last, addr in self.slots:
            if first <= slot <= last:
                return addr
        self.slots = []
        raise RedisError(f"no master serves hash slot {slot}")

    def call(self, *args: str) -> Any:
        """Send ``args`` (an EVAL with at least one key; any other command goes to the
        master of slot 0) to the master of its slot and return the reply; raises RedisError
        or OSError."""
        slot = keyslot(args[3]) if args[0] == "EVAL" and int(args[2]) > 0 else 0
        addr = self._master(slot)
        for _ in range(3):
            try:
                return self._node(addr).call(*args)
            except RedisError as exc:
                kind, _, where = str(exc).partition(" ")
                if kind not in ("MOVED", "ASK"):
                    raise
                addr = _address(where.rpartition(" ")[2])
                if kind == "MOVED":
                    self.slots = []  # asked again at the next call
                    continue
                node = self._node(addr)
                node.call("ASKING")
                return node.call(*args)
            except OSError:
                self.slots = []
                raise
        raise RedisError(f"hash slot {slot} moved three times in one call")

    def follow_master(self) -> None:
        """Nothing to do: a master that moved answers MOVED, or its connection fails."""

    def close(self) -> None:
        for r in self.nodes.values():
            r.close()


def client(conf: dict[str, Any]) -> Resp | Cluster:
    """The client ``conf`` describes: a :class:`Cluster` when it names cluster nodes."""
    return Cluster(conf) if conf.get("cluster") else Resp(conf)
