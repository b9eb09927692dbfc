"""A MongoDB wire-protocol server for the tests: mongoeco's proxy in its own Python 3.13 venv.

No mongod can be installed on the project's machines, so the suite talks, with the real
pymongo driver over TCP, to ``mongoeco.wire.proxy.AsyncMongoEcoProxyServer`` (memory
engine) from the PyPI package ``mongoeco[wire]`` (pinned below; the ``[wire]`` extra
brings pymongo's bson, without which the server drops every connection). mongoeco needs
Python >= 3.13, so it lives in a small venv of its own, built once under the cache dir:

    python3 tests/mongo_server.py build     # what .ci/run does (idempotent; ~10 s)
    python3 tests/mongo_server.py serve     # run one in the foreground (prints its URL)

Inside that venv this same file is the server's entry point (``_serve``): it binds a free
port on 127.0.0.1, prints ``mongodb://127.0.0.1:PORT/?directConnection=true`` on one line
of stdout, then serves until its stdin closes (so it dies with the test session that
started it) or it is sent SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MONGOECO = "mongoeco[wire]==4.11.0"
#: The 3.13 interpreter pyenv provides on these machines; RUNTIME_TEST_PY313 overrides.
PY313_CANDIDATES = ("/root/.pyenv/versions/3.13.0/bin/python3", "python3.13")
#: Seconds the server has to print its URL.
START_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    """Where the venv lives: $RUNTIME_TEST_CACHE, else $XDG_CACHE_HOME/runtime, else ~/.cache/runtime."""
    base = os.environ.get("RUNTIME_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "runtime")
    return Path(base)


def venv_python() -> Path:
    """The interpreter of the mongoeco venv (which may not exist yet)."""
    return cache_dir() / ("mongoeco-" + MONGOECO.split("==")[1]) / "bin" / "python"


def find_python313() -> str | None:
    """A Python >= 3.13 interpreter, or None."""
    for cand in (os.environ.get("RUNTIME_TEST_PY313"), *PY313_CANDIDATES):
        if not cand:
            continue
        path = cand if os.path.isabs(cand) else shutil.which(cand)
        if path and os.access(path, os.X_OK):
            return path
    return None


def is_built() -> bool:
    """True when the venv exists and imports mongoeco's wire server."""
    py = venv_python()
    if not py.exists():
        return False
    probe = subprocess.run([str(py), "-c", "import mongoeco.wire.proxy, bson"], capture_output=True)
    return probe.returncode == 0


def build(quiet: bool = True) -> Path:
    """Build the venv if missing; returns its interpreter.

    Raises RuntimeError (with pip's output) when no 3.13 interpreter is found or pip fails.
    """
    py = venv_python()
    if is_built():
        return py
    import fcntl
    cache_dir().mkdir(parents=True, exist_ok=True)
    # One builder at a time: a second one would delete the venv the first is filling.
    with open(cache_dir() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built():
            return py
        return _build_venv(py, quiet)


def _build_venv(py: Path, quiet: bool) -> Path:
    """Create the venv at py's folder and pip-install mongoeco into it (the lock is held)."""
    base = find_python313()
    if base is None:
        raise RuntimeError("no Python >= 3.13 found (tried RUNTIME_TEST_PY313, "
                           + ", ".join(PY313_CANDIDATES) + "); mongoeco needs one")
    venv = py.parent.parent
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [[base, "-m", "venv", str(venv)],
             [str(py), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else []), MONGOECO]]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return py


def start() -> tuple[subprocess.Popen[str], str]:
    """Start a server from the venv (built if missing); returns (process, URL).

    The caller stops it by pid (``proc.terminate()``). Raises RuntimeError if it does not
    print its URL within START_TIMEOUT_S.
    """
    py = build()
    proc = subprocess.Popen([str(py), __file__, "_serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    if not sel.select(START_TIMEOUT_S):
        proc.kill()
        raise RuntimeError(f"mongoeco server printed no URL within {START_TIMEOUT_S} s")
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.startswith("mongodb://"):
        proc.kill()
        raise RuntimeError(f"mongoeco server failed to start: {line!r} {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    return proc, line


def _serve() -> None:  # pragma: no cover - runs inside the 3.13 venv
    import asyncio
    import signal

    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        # the parent holds our stdin: when it exits (even SIGKILLed), read() returns EOF
        loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
        async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=0) as server:
            print(f"mongodb://127.0.0.1:{server.address.port}/?directConnection=true", flush=True)
            await stop.wait()
        os._exit(0)  # the stdin reader thread may still block

    asyncio.run(main())


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "build"
    if cmd == "_serve":
        _serve()
    elif cmd == "build":
        print(build(quiet=False))
    elif cmd == "serve":
        p, url = start()
        print(url, flush=True)
        try:
            p.wait()
        except KeyboardInterrupt:
            p.terminate()
    else:
        sys.exit(f"usage: {sys.argv[0]} build|serve")
