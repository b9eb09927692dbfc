"""Middleware: the protocol's guarantees, and the timing and logs middleware."""

from __future__ import annotations

import re

from runtime import run_task


def test_logs_and_prints_are_captured_per_job_with_50_greenlets(client, workers):
    ids = client.queue_jobs("testtasks.chatty", [{"n": n, "lines": 5} for n in range(50)])
    workers.start("--greenlets", "50")
    for job in client.wait(ids, timeout_s=30):
        n = job.result
        assert len(job.logs) == 10, (job.exc_message, job.traceback)
        tags = {int(m) for line in job.logs for m in re.findall(r"(?:job|print) (\d+) line", line)}
        assert tags == {n}
        assert any(line.startswith("[stdout] print") for line in job.logs)


def test_logs_are_capped_with_a_marker(client, workers):
    workers.start(max_log_lines=20)
    job = client.wait(client.queue_job("testtasks.chatty", {"n": 1, "lines": 50, "step_s": 0}), timeout_s=10)
    assert len(job.logs) == 21
    assert job.logs[-1].startswith("[runtime: 80 more lines") and "max_log_lines=20" in job.logs[-1]


def test_timing_charges_cpu_to_the_job_that_burned_it(client, workers):
    workers.start("--greenlets", "2")
    burner = client.queue_job("testtasks.burn_and_sleep", {"burn_s": 0.3})
    sleeper = client.queue_job("testtasks.burn_and_sleep", {"sleep_s": 0.5})
    b, s = client.wait([burner, sleeper], timeout_s=10)
    tb, ts = b.report["timing"], s.report["timing"]
    assert tb["cpu_s"] >= 0.25 and tb["wall_s"] >= 0.3
    assert ts["wall_s"] >= 0.5 and ts["cpu_s"] < 0.05  # it slept while the other burned
    assert ts["switches"] >= 1 and ts["wait_s"] >= 0


def test_a_raising_before_hook_fails_the_job_and_points_at_the_hook(client, workers):
    workers.start(middleware="testmiddleware.BrokenBefore,testmiddleware.BrokenAfter")
    bad = client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 2}), timeout_s=10)
    assert bad.status == "failed" and bad.reason == "middleware"
    assert "BrokenBefore.before_job raised ValueError: before hook exploded" in bad.exc_message
    assert "testmiddleware.py" in bad.traceback
    # an after-hook that raises is logged; the job keeps its status
    ok = client.wait(client.queue_job("testtasks.sleep", {"seconds": 0}), timeout_s=10)
    assert ok.status == "success", (ok.exc_message, ok.traceback)


def test_a_middleware_runs_only_for_the_task_paths_it_applies_to(client, workers):
    workers.start(middleware="testmiddleware.OnlyAdd")
    add, sleep = client.wait([client.queue_job("testtasks.add", {"a": 1, "b": 2}),
                              client.queue_job("testtasks.sleep", {"seconds": 0.01})], timeout_s=10)
    assert add.report["only_add"] == {"before": "testtasks.add", "after": "testtasks.add"}
    assert sleep.status == "success" and "only_add" not in sleep.report


def test_middleware_declares_task_options(client, workers):
    workers.start(middleware="testmiddleware.Flavour", task_modules="testflavour")
    job = client.wait(client.queue_job("testflavour.flavoured"), timeout_s=10)
    assert job.status == "success" and job.report["flavour"] == {"seen": "testflavour.flavoured"}


def test_an_option_no_middleware_declares_fails_the_import(client, workers):
    workers.start(task_modules="testflavour")
    job = client.wait(client.queue_job("testflavour.flavoured"), timeout_s=10)
    assert job.status == "failed" and "unknown task option 'flavour'" in job.exc_message


def test_run_task_goes_through_the_same_middleware():
    out = run_task("testtasks.chatty", {"n": 7, "lines": 2, "step_s": 0})
    assert out.ok and out.report["timing"]["wall_s"] >= 0
    assert "[stdout] print 7 line 1" in out.logs


def test_memory_reports_rss_before_and_after_each_job(client, workers):
    workers.start("--greenlets", "1")
    job = client.wait(client.queue_job("tasks_example.work.leaky", {"kilobytes": 4096}), timeout_s=10)
    mem = job.report["memory"]
    assert mem["rss_before"] > 10 * 2**20 and mem["rss_delta"] > 2 * 2**20 and mem["concurrent"] == 0


def test_heap_diff_names_the_leaking_line_and_the_job_runs_alone(client, workers):
    workers.start("--greenlets", "4", trace_memory="tasks_example.work.leaky")
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
