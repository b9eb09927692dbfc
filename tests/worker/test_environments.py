"""Any locale, any /proc: commands under the C locale with no UTF-8 mode, jobs printing
what an ASCII stdout cannot encode, a process that may not read its own RSS."""

from __future__ import annotations

import logging
import subprocess
import sys

import psutil
import pytest
from helpers import ROOT, rt

import runtime.process

#: The C locale without Python's UTF-8 mode: the locale encoding is ASCII.
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
TEXT = "déjà vu ✓ ファイル"


def test_commands_work_under_the_c_locale_without_utf8_mode(client, cli_env):
    env = {**cli_env, **C_LOCALE}
    queued = rt(env, "enqueue", "testtasks.add", '{"a": 1, "b": 2}')
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert client.get_job(job_id).status == "queued"
    burst = rt(env, "worker", "--burst")
    assert burst.returncode == 0, burst.stderr
    assert client.get_job(job_id).result == 3
    shown = rt(env, "jobs")
    assert shown.returncode == 0 and job_id in shown.stdout, shown.stderr


def test_every_text_file_runtime_opens_names_its_encoding():
    """What the C-locale test does not reach (runtime.toml, --profile-html, the example
    tasks' files...): ruff's unspecified-encoding rule (a preview rule, so asked for here)."""
    pytest.importorskip("ruff")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--preview", "--select", "PLW1514",
                          "--output-format", "concise", "runtime", "diagnostics", "tasks_example"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("encoding", [{"PYTHONIOENCODING": "ascii"}, C_LOCALE], ids=["ascii", "C"])
def test_a_job_printing_what_stdout_cannot_encode_succeeds_and_the_cli_shows_it(client, cli_env, encoding):
    env = {**cli_env, **encoding}
    job_id = client.queue_job("testtasks.say", {"text": TEXT})
    burst = rt(env, "worker", "--burst")
    assert burst.returncode == 0, burst.stderr
    job = client.get_job(job_id)
    assert job.status == "success" and job.result == TEXT, job.traceback
    assert f"[stdout] {TEXT}" in job.logs  # captured as printed
    assert "d\\xe9j\\xe0 vu \\u2713" in burst.stdout  # escaped on the way out
    for args in (["job", job_id], ["jobs"], ["run", "testtasks.say", '{"text": "\\u00e9t\\u00e9"}']):
        shown = rt(env, *args)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, (args, shown.stderr)
    assert "\\xe9t\\xe9" in rt(env, "run", "testtasks.say", '{"text": "\\u00e9t\\u00e9"}').stdout


def test_an_unreadable_rss_turns_the_memory_features_off_with_one_warning(client, worker, monkeypatch, caplog):
    """As in a locked-down /proc: /proc/self/statm cannot be opened, and psutil is denied."""
    real_open = runtime.process.os.open

    def no_statm(path, *args, **kwargs):
        if str(path).startswith("/proc/self"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def denied(self, *args, **kwargs):
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(runtime.process.os, "open", no_statm)
    monkeypatch.setattr(psutil.Process, "memory_info", denied)
    caplog.set_level(logging.INFO)
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(5)])
    worker.burst(mem_check_interval_s=0.2, max_jobs=100)  # the limits' timer reads RSS too
    jobs = client.store.get_many(ids)
    assert [j.status for j in jobs] == ["success"] * 5, [j.traceback for j in jobs]
    assert all("memory" not in (j.report or {}) for j in jobs)
    # one warning, and nothing else (no failed heartbeat, no raising hook)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "cannot read its RSS" in said[0] and "memory features are off" in said[0], said


LOG_FROM_TWO_THREADS = """
from runtime.worker.patching import patch
patch()
import logging, time
import gevent
from gevent import monkey
logging.basicConfig(level=logging.DEBUG, stream=open(__import__("os").devnull, "w"))
log = logging.getLogger("t")
stop = []
def native():  # as the heartbeat: a real thread
    while not stop:
        log.debug("from the native thread")
monkey.get_original("_thread", "start_new_thread")(native, ())
n, t = 0, time.monotonic()
while time.monotonic() - t < 2:
    log.debug("from the hub %d", n)
    n += 1
    if n % 100 == 0:
        gevent.sleep(0)
stop.append(1)
print("logged", n)
"""


def test_the_hub_and_a_native_thread_logging_at_once_never_end_the_worker():
    """A worker logs from its hub and from its heartbeat's native thread: with gevent's
    locks in logging the hub ended with LoopExit (or hung) within ~100 lines; with native
    ones (runtime.worker.patching) it logs on."""
    out = subprocess.run([sys.executable, "-c", LOG_FROM_TWO_THREADS], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("logged "), out.stderr[-2000:]
    assert "LoopExit" not in out.stderr
