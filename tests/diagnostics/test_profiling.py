"""Per-job pyinstrument profiles that contain only their own job."""

from __future__ import annotations

from helpers import cli

from runtime import run_task


def test_a_profile_holds_its_job_and_not_the_job_running_beside_it(client, worker, settings, tmp_path):
    worker.start(greenlets=2, profile="testtasks.burn_alpha")
    alpha = client.queue_job("testtasks.burn_alpha", {"seconds": 0.4})
    beta = client.queue_job("testtasks.burn_beta", {"seconds": 0.4})
    ja, jb = client.wait([alpha, beta], timeout_s=20)
    assert "profile" not in jb.artifacts and "profile" not in jb.report
    assert ja.report["profile"]["samples"] > 50
    text = cli(settings, "job", alpha, "--artifact", "profile").stdout
    assert "burn_alpha" in text and "burn_beta" not in text
    # it starts at the task: runtime's own frames around it (chain, execution) are not the job's
    assert "run_attempt" not in text and "runtime/" not in text, text
    assert "[waiting: greenlet switched out]" in text  # the time it yielded to burn_beta
    html = tmp_path / "p.html"
    r = cli(settings, "job", alpha, "--artifact", "profile", "--html", str(html))
    assert r.exit_code == 0 and html.read_text().startswith("<!DOCTYPE html>")
    assert "profile   " in cli(settings, "job", alpha).stdout


def test_task_option_profiles_and_waiting_time_is_attributed(client, worker):
    worker.start()
    job = client.wait(client.queue_job("testtasks.profiled_sleep", {"seconds": 0.2}), timeout_s=10)
    top = job.report["profile"]["top"][0]
    assert top["function"] == "[waiting: greenlet switched out]" and top["self_s"] >= 0.15


def test_run_task_returns_the_profile():
    out = run_task("testtasks.profiled_sleep", {"seconds": 0.05})
    assert out.ok and out.profile is not None and "profiled_sleep" in out.profile_text()


def test_a_profiling_worker_imports_pyinstrument_at_start_not_in_the_first_job(client, workers, monkeypatch):
    """Python's own import log (PYTHONPROFILEIMPORTTIME) shows pyinstrument imported before
    the worker says it started: the first profiled job is not charged for it."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    proc = workers.start("--burst", "--profile")
    assert proc.wait(30) == 0
    log = workers.log(proc).splitlines()
    started = next(i for i, line in enumerate(log) if " started: redis " in line)
    imported = [i for i, line in enumerate(log) if line.startswith("import time:") and line.endswith("pyinstrument.session")]
    assert imported and imported[0] < started, log[started - 3:started + 3]
    assert client.get_job(job_id).report["profile"]["samples"] >= 0
