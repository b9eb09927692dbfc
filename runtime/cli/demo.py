"""``runtime demo``: one analysis job per .py file of the installed standard library.

Queues the jobs (queue ``demo``), starts a real worker process (``runtime worker
--burst``) over them, draws a progress bar from completion notifications (no polling),
and prints a summary: jobs by status, throughput, queue wait and run time percentiles,
and the slowest jobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import click

from ..broker import redis_url
from ..client import Client
from ..settings import Settings
from ..units import plural
from .app import echo

TASK = "tasks_example.files.analyse_source"
QUEUE = "demo"


def stdlib_files(limit: int | None = None) -> list[str]:
    """Every .py file of this interpreter's standard library (site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in root.rglob("*.py") if "site-packages" not in p.parts)
    return files[:limit] if limit else files


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank, or None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def run_demo(settings: Settings, limit: int | None = None, greenlets: int = 10, quiet: bool = False) -> dict[str, Any]:
    """Run the demo and return its summary (also printed unless ``quiet``)."""
    embedded_before = bool(settings.redis_url)
    url = redis_url(settings)
    settings = settings.replace(redis_url=url)
    client = Client(settings)
    files = stdlib_files(limit)
    say = (lambda *a, **k: None) if quiet else click.echo
    say(f"queueing {len(files)} jobs: {TASK} on each .py file of {sysconfig.get_paths()['stdlib']}")
    t0 = time.time()
    ids = client.queue_jobs(TASK, [{"path": f} for f in files], queue=QUEUE)
    # parsing is CPU-bound: a worker process per core (under a supervisor) when there are several
    processes = ["--processes", str(min(os.cpu_count() or 1, 4))] if (os.cpu_count() or 1) > 1 else []
    flags = ["--queues", QUEUE, "--greenlets", str(greenlets), *processes, "--burst"]
    argv = [sys.executable, "-m", "runtime", "--redis", url, "--prefix", settings.key_prefix,
            # ERROR: the failures are listed at the end, with why they are expected
            "worker", *flags, "--log-level", "ERROR", "--tasks", TASK.rsplit(".", 2)[0]]
    say(f"starting a worker: runtime worker {' '.join(flags)}")
    proc = subprocess.Popen(argv)
    jobs: list[Any] = []
    try:
        with click.progressbar(length=len(ids), label="analysing", show_pos=True, show_eta=True,
                               file=open(os.devnull, "w", encoding="utf-8") if quiet else None) as bar:
            for job in client.iter_done(ids, timeout_s=3600):
                jobs.append(job)
                bar.update(1)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    summary = summarize(jobs, time.time() - t0)
    if not quiet:
        print_summary(summary)
        if not embedded_before:
            echo("the embedded redis-server under .runtime/ keeps running for the next commands "
                       "(runtime embedded stop stops it)")
    return summary


def summarize(jobs: list[Any], elapsed_s: float) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for j in jobs:
        by_status[j.status.value] = by_status.get(j.status.value, 0) + 1
    started = [j.started_at for j in jobs if j.started_at]
    ended = [j.ended_at for j in jobs if j.ended_at]
    span = (max(ended) - min(started)) if started and ended else None
    waits = [j.wait_s for j in jobs if j.wait_s is not None]
    runs = [j.run_s for j in jobs if j.run_s is not None]
    slow = sorted((j for j in jobs if j.run_s is not None), key=lambda j: -(j.run_s or 0))[:5]
    not_ok = [j for j in jobs if j.status.value != "success"]
    failed = not_ok[:5]
    return {
        "jobs": len(jobs), "by_status": by_status, "elapsed_s": elapsed_s,
        "throughput_jobs_per_s": (len(ended) / span) if span else None,
        "wait_ms": {f"p{q}": _ms(percentile(waits, q)) for q in (50, 90, 99)},  # includes the backlog
        "run_ms": {f"p{q}": _ms(percentile(runs, q)) for q in (50, 90, 99)},
        "slowest": [{"id": j.id, "file": j.params.get("path"), "run_ms": _ms(j.run_s)} for j in slow],
        "not_success_count": len(not_ok),
        # test data the standard library ships on purpose as invalid Python 3 (lib2to3's
        # Python 2 samples, bad-syntax cases): their SyntaxError is the right outcome
        "expected_failures": sum(1 for j in not_ok if j.exc_type == "SyntaxError"
                                 and {"test", "tests"} & set(Path(str(j.params.get("path"))).parts[:-1])),
        "not_success": [{"id": j.id, "file": j.params.get("path"), "status": j.status.value,
                         "error": f"{j.exc_type}: {j.exc_message}"} for j in failed],
    }


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000, 1)


def print_summary(s: dict[str, Any]) -> None:
    echo("")
    echo(f"{s['jobs']} jobs in {s['elapsed_s']:.1f} s: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items())))
    if s["throughput_jobs_per_s"]:
        echo(f"throughput  {s['throughput_jobs_per_s']:.0f} jobs/s (first start to last end)")
    echo("queue wait  " + "  ".join(f"{k} {v} ms" for k, v in s["wait_ms"].items())
               + "   (all jobs were queued at once: this is the backlog)")
    echo("run time    " + "  ".join(f"{k} {v} ms" for k, v in s["run_ms"].items()))
    echo("slowest jobs:")
    for j in s["slowest"]:
        echo(f"  {j['run_ms']:>8} ms  {j['id']}  {j['file']}")
    if s["not_success"]:
        echo("jobs that did not succeed (see `runtime job ID`):")
        for j in s["not_success"]:
            echo(f"  {j['status']:8} {j['id']}  {j['file']}")
            echo(f"           {j['error'][:200]}")
        more = s["not_success_count"] - len(s["not_success"])
        if more > 0:
            echo(f"  ... and {more} more: runtime jobs --queue {QUEUE} --status failed")
        expected = s["expected_failures"]
        if expected:
            also = "" if expected == s["not_success_count"] else f" (the other {s['not_success_count'] - expected} are not)"
            echo(f"{expected} of these failures {plural(expected, 'is', 'are')} expected{also}: the standard "
                 "library ships test files that "
                 "are not valid Python 3 on purpose (lib2to3's Python 2 samples, bad-syntax cases), and the "
                 "task reports their SyntaxError, as it should")

