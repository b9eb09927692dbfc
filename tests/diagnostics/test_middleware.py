"""Middleware: the protocol's guarantees (order, hooks, options, seams), and the timing,
logs, memory and heap-diff middleware."""

from __future__ import annotations

import re

import pytest
from helpers import wait_until

from runtime import run_task


def test_logs_and_prints_are_captured_per_job_with_50_greenlets(client, worker):
    ids = client.queue_jobs("testtasks.chatty", [{"n": n, "lines": 5} for n in range(50)])
    worker.start(greenlets=50)
    for job in client.wait(ids, timeout_s=30):
        n = job.result
        assert len(job.logs) == 10, (job.exc_message, job.traceback)
        tags = {int(m) for line in job.logs for m in re.findall(r"(?:job|print) (\d+) line", line)}
        assert tags == {n}
        assert any(line.startswith("[stdout] print") for line in job.logs)


def test_logs_are_capped_with_a_marker(client, worker):
    worker.start(max_log_lines=20)
    job = client.wait(client.queue_job("testtasks.chatty", {"n": 1, "lines": 50, "step_s": 0}), timeout_s=10)
    assert len(job.logs) == 21
    assert job.logs[-1].startswith("[runtime: 80 more lines") and "max_log_lines=20" in job.logs[-1]


def test_a_progress_bar_is_kept_and_shown_as_its_last_state(client, worker, capsys):
    """20,000 redraws (carriage returns) by two jobs at once: each job's logs hold one line,
    its bar's last state, and the worker's console gets that line once per job, whole."""
    worker.start(greenlets=2)
    ids = [client.queue_job("testtasks.progress", {"n": 20_000, "label": label, "sleep_every": 1000})
           for label in ("a:", "b:")]
    a, b = client.wait(ids, timeout_s=30)
    assert a.logs == ["[stdout] a:20000/20000 done"] and b.logs == ["[stdout] b:20000/20000 done"]
    out = capsys.readouterr().out
    assert "a:20000/20000 done\n" in out and "b:20000/20000 done\n" in out and "\\x0d" not in out


def _burner_and_sleeper(client, worker):
    worker.start(greenlets=2)
    burner = client.queue_job("testtasks.burn_and_sleep", {"burn_s": 0.3})
    sleeper = client.queue_job("testtasks.burn_and_sleep", {"sleep_s": 0.5})
    b, s = client.wait([burner, sleeper], timeout_s=10)
    return b.report["timing"], s.report["timing"]


def test_timing_charges_cpu_to_the_job_that_burned_it(client, worker):
    tb, ts = _burner_and_sleeper(client, worker)
    assert tb["cpu_s"] >= 0.25 and tb["wall_s"] >= 0.3
    assert ts["wall_s"] >= 0.5 and ts["cpu_s"] < tb["cpu_s"] / 5  # it slept while the other burned
    assert ts["switches"] >= 1 and ts["wait_s"] >= 0


@pytest.mark.timing
def test_a_sleeping_job_is_charged_next_to_no_cpu(client, worker):
    tb, ts = _burner_and_sleeper(client, worker)
    assert ts["cpu_s"] < 0.05


def test_a_raising_before_hook_fails_the_job_and_points_at_the_hook(client, worker):
    worker.start(middleware="testmiddleware.BrokenBefore,testmiddleware.BrokenAfter")
    bad = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=10)
    assert bad.status == "failed" and bad.reason == "middleware"
    assert "BrokenBefore.before_job raised ValueError: before hook exploded" in bad.exc_message
    assert "testmiddleware.py" in bad.traceback
    # an after-hook that raises is logged; the job keeps its status
    ok = client.wait(client.queue_job("testtasks.sleep", {"seconds": 0}), timeout_s=10)
    assert ok.status == "success", (ok.exc_message, ok.traceback)


def test_a_middleware_runs_only_for_the_task_paths_it_applies_to(client, worker):
    worker.start(middleware="testmiddleware.OnlyAdd")
    add, sleep = client.wait([client.queue_job("testtasks.add", {"a": 1, "b": 2}),
                              client.queue_job("testtasks.sleep", {"seconds": 0.01})], timeout_s=10)
    assert add.report["only_add"] == {"before": "testtasks.add", "after": "testtasks.add"}
    assert sleep.status == "success" and "only_add" not in sleep.report


def test_middleware_declares_task_options(client, worker):
    worker.start(middleware="testmiddleware.Flavour", task_modules="testflavour")
    job = client.wait(client.queue_job("testflavour.flavoured"), timeout_s=10)
    assert job.status == "success" and job.report["flavour"] == {"seen": "testflavour.flavoured"}


def test_an_option_no_middleware_declares_stops_the_worker_at_start(workers):
    """In a process of its own: the task module was never imported with that option known."""
    proc = workers.start(task_modules="testflavour")
    assert proc.wait(30) == 2
    assert "unknown task option 'flavour'" in workers.log(proc)


def test_run_task_goes_through_the_same_middleware():
    out = run_task("testtasks.chatty", {"n": 7, "lines": 2, "step_s": 0})
    assert out.ok and out.report["timing"]["wall_s"] >= 0
    assert "[stdout] print 7 line 1" in out.logs


def test_memory_reports_rss_before_and_after_each_job(client, worker):
    """The job keeps 16 MiB of small dicts: more than the free room the test process's
    earlier tests may have left in its allocator's arenas, which a smaller leak can fill
    without the RSS growing at all."""
    from tasks_example import work
    worker.start(greenlets=1)
    try:
        job = client.wait(client.queue_job("tasks_example.work.leaky", {"kilobytes": 16384}), timeout_s=20)
    finally:
        work._cache.clear()  # the leak stays in this process otherwise
    mem = job.report["memory"]
    assert mem["rss_before"] > 10 * 2**20 and mem["rss_delta"] > 2 * 2**20 and mem["overlapping"] == 0


def test_heap_diff_names_the_leaking_line_and_the_job_runs_alone(client, worker):
    worker.start(greenlets=4, trace_memory="tasks_example.work.leaky")
    sleepers = client.queue_jobs("testtasks.sleep", [{"seconds": 0.3}] * 3)
    leak = client.queue_job("tasks_example.work.leaky", {"kilobytes": 512})
    more = client.queue_jobs("testtasks.sleep", [{"seconds": 0.3}] * 3)
    jobs = {j.id: j for j in client.wait(sleepers + [leak] + more, timeout_s=20)}
    diff = jobs[leak].report["heap_diff"]
    assert diff["alone"] and diff["top"][0]["where"].startswith("work.py:") and diff["top"][0]["bytes"] > 300_000
    lj = jobs[leak]
    for other in sleepers + more:  # nothing else ran while the traced job ran
        o = jobs[other]
        assert o.ended_at <= lj.started_at or o.started_at >= lj.ended_at
    assert all("heap_diff" not in jobs[i].report for i in sleepers + more)
    # it waited for the sleepers to end, and what was claimed with it waited for it
    assert lj.report["timing"]["wait_reason"] == "exclusive"
    assert all(jobs[i].report["timing"].get("wait_reason") in (None, "exclusive") for i in more)


def test_a_middleware_order_that_breaks_a_rule_is_refused_at_start(settings, worker):
    from helpers import with_settings

    from runtime.errors import ConfigError
    from runtime.middleware import Chain
    bad = with_settings(settings, middleware="diagnostics.sentry.Sentry,diagnostics.tracing.Tracing")
    with pytest.raises(ConfigError, match="diagnostics.sentry.Sentry must come after diagnostics.tracing.Tracing"):
        Chain.from_settings(bad)
    with pytest.raises(ConfigError, match="diagnostics.metrics.Metrics must come before diagnostics.timing.Timing"):
        worker.make(middleware="diagnostics.timing.Timing,diagnostics.metrics.Metrics")
    assert len(Chain.from_settings(settings).items) == len(settings.middleware)  # the default order is fine


def test_a_middleware_stores_an_artifact_and_shows_its_own_sections(client, worker, settings):
    from helpers import cli
    worker.start(middleware="diagnostics.timing.Timing,testmiddleware.Stamp")
    job = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=10)
    assert job.artifacts == {"note": f"note of {job.id}"}
    assert job.report["stamp"] == {"path": "testtasks.add", "params": {"a": 1, "b": 2}}  # the job's own params
    shown = cli(settings, "job", job.id, middleware="diagnostics.timing.Timing,testmiddleware.Stamp")
    assert "  stamp     stamped testtasks.add" in shown.stdout and "  timing    the task " in shown.stdout
    assert f"artifact  note: {len(job.artifacts['note'])} bytes" in shown.stdout
    art = cli(settings, "job", job.id, "--artifact", "note", middleware="diagnostics.timing.Timing,testmiddleware.Stamp")
    assert art.exit_code == 0 and art.stdout.strip() == f"NOTE OF {job.id.upper()}"
    # without the middleware that stores it, the section is shown raw and the artifact cannot be rendered
    raw = cli(settings, "job", job.id, middleware="diagnostics.timing.Timing")
    assert '  stamp     {"path": "testtasks.add", "params": {"a": 1, "b": 2}}' in raw.stdout
    missing = cli(settings, "job", job.id, "--artifact", "note", middleware="diagnostics.timing.Timing")
    assert missing.exit_code == 3 and "no configured middleware renders artifact 'note'" in missing.stderr


def test_an_artifact_without_a_renderer_of_its_own_is_shown_as_stored(client, worker, settings, tmp_path):
    from helpers import cli
    worker.start(middleware="testmiddleware.RawNote")
    job = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=10)
    text = cli(settings, "job", job.id, "--artifact", "raw", middleware="testmiddleware.RawNote")
    assert text.exit_code == 0 and text.stdout.strip() == "<b>as stored</b>"
    html = cli(settings, "job", job.id, "--artifact", "raw", "--html", "-", middleware="testmiddleware.RawNote")
    assert html.exit_code == 0 and "<pre>&lt;b&gt;as stored&lt;/b&gt;</pre>" in html.stdout  # escaped
    bad = cli(settings, "job", job.id, "--artifact", "raw", "--html", str(tmp_path / "no" / "x.html"),
              middleware="testmiddleware.RawNote")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: cannot write") and len(bad.stderr.splitlines()) == 1


def test_a_failing_job_leaves_no_garbage_cycle_holding_its_frames(client, worker):
    """100 retries of a task that raises while a local holds 50 MiB: each attempt's
    exception, traceback and frames are released when the attempt is stored, without
    waiting for a gc.collect() (which a worker may not run for thousands of jobs)."""
    import gc

    from runtime.process import rss_reader
    rss = rss_reader()
    job_id = client.queue_job("testtasks.fail_holding", {"mb": 50})
    gc.collect()
    gc.disable()
    try:
        before = rss.read()
        worker.burst()
        after = rss.read()
    finally:
        gc.enable()
    job = client.get_job(job_id)
    assert job.status == "maxretries" and job.retries == 100, (job.status, job.retries)
    assert after - before < 120 * 2**20, f"RSS grew {(after - before) / 2**20:.0f} MiB over 100 failed attempts"


def test_a_recycle_event_does_not_blame_a_fresh_workers_first_job_for_its_start_up(client, worker, settings):
    """The worker grew 40 MiB at start (a middleware's imports); its first job grew it by
    nothing of its own, so it must not top the recycle event's growers with 40 MiB."""
    from runtime.worker.limits import Recycle
    ids = client.queue_jobs("testtasks.add", [{"a": 1, "b": 2}] * 3)
    w = worker.burst(mem_limit_bytes=2**40, middleware=(*settings.middleware, "testmiddleware.HeavyStart"))
    assert [j.status for j in client.store.get_many(ids)] == ["success"] * 3
    event = w.limits.event(Recycle("mem-limit", "test"), w.id)
    assert event["jobs_run"] == 3
    assert all(g["rss_growth_bytes"] < 10 * 2**20 for g in event["top_growers"]), event["top_growers"]


def test_the_memory_line_counts_the_jobs_that_ran_during_a_job(client, worker):
    """A job that started after a long one and ended before it overlapped it: the long
    one's report counts it (it was not running when the long one ended)."""
    worker.start(greenlets=2)
    long_id = client.queue_job("testtasks.sleep", {"seconds": 0.6})
    wait_until(lambda: client.get_job(long_id).status == "started", 10, "the long job to start")
    short = client.wait(client.queue_job("testtasks.sleep", {"seconds": 0.05}), timeout_s=10)
    long = client.wait(long_id, timeout_s=10)
    assert long.report["memory"]["overlapping"] == 1 and short.report["memory"]["overlapping"] == 1
    alone = client.wait(client.queue_job("testtasks.sleep", {"seconds": 0.05}), timeout_s=10)
    assert alone.report["memory"]["overlapping"] == 0


def test_a_guppy_heap_diff_partitions_what_the_job_kept_by_kind(client, worker, settings):
    """--trace-memory guppy:PATTERN: the job runs alone between setrelheap() and heap(),
    and the kinds of what it left alive are stored, shown by `runtime job` and run_task."""
    from helpers import cli

    from runtime import run_task
    worker.start(greenlets=4, trace_memory="guppy:tasks_example.work.leaky,testtasks.sleep")
    leak = client.queue_job("tasks_example.work.leaky", {"kilobytes": 512})
    plain = client.queue_job("testtasks.sleep", {"seconds": 0.01})
    jobs = {j.id: j for j in client.wait([leak, plain], timeout_s=20)}
    diff = jobs[leak].report["heap_diff"]
    assert diff["method"] == "guppy" and diff["alone"] and diff["cost_s"] > 0
    assert diff["total_bytes"] > 400_000 and diff["kinds"][0]["bytes"] > 400_000, diff["kinds"][:3]
    assert {"kind", "count", "bytes"} <= set(diff["kinds"][0])
    assert jobs[plain].report["heap_diff"]["method"] == "tracemalloc"
    shown = cli(settings, "job", leak).stdout
    assert "(guppy3, cost" in shown and diff["kinds"][0]["kind"] in shown
    first = run_task("tasks_example.work.leaky", {"kilobytes": 64}, settings.replace(trace_memory="tracemalloc"))
    assert first.report["heap_diff"]["method"] == "tracemalloc"
    out = run_task("tasks_example.work.leaky", {"kilobytes": 256}, settings.replace(trace_memory="guppy"))
    assert out.report["heap_diff"]["method"] == "guppy" and "by kind:" in out.describe()  # not the first's chain


def test_an_unknown_heap_diff_method_is_one_clear_error(settings):
    from runtime.errors import ConfigError
    from runtime.middleware import Chain
    with pytest.raises(ConfigError, match="unknown heap diff method 'heapy'"):
        Chain.from_settings(settings.replace(trace_memory="heapy:tasks.*"))
    with pytest.raises(ConfigError, match="'heapy' is neither a method"):  # a mistyped method, not a task pattern
        Chain.from_settings(settings.replace(trace_memory="heapy"))
