"""Every way a job can end, through a worker (in-process: a worker runs there as in a
process of its own; the process tests are in test_shutdown and tests/supervisor)."""

from __future__ import annotations

import time

import pytest
from helpers import wait_until

from runtime.errors import InvalidParams, InvalidTransition, JobNotFound, WaitTimeout

ON_CLUSTER_TOO = True  # every test here runs on a standalone Redis and on a Redis Cluster (conftest)


def test_success_stores_result_times_and_history(client, worker):
    job_id = client.queue_job("testtasks.add", {"a": 2, "b": 3})
    worker.start()
    job = client.wait(job_id, timeout_s=10)
    assert job.status == "success" and job.result == 5
    assert job.queued_at <= job.started_at <= job.ended_at
    assert job.worker and job.attempt == 1
    assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "success"]


def test_class_task_gets_params(client, worker):
    job_id = client.queue_job("testtasks.Adder", {"a": 1, "b": 41})
    worker.start()
    assert client.wait(job_id, timeout_s=10).result == 42


@pytest.mark.parametrize("path, params, reason, message", [
    ("testtasks.add", {"a": 1}, "bad-params", "missing required param 'b'"),
    ("testtasks.add", {"a": 1, "bb": 2, "c": 3}, "bad-params", "unknown params 'bb' (did you mean 'b'?), 'c'"),
    ("testtasks.getenv", {"key": "HOME"}, "bad-task", "it is os.getenv, imported into 'testtasks'"),
    ("testtasks._private", {}, "bad-task", "its name is private"),
    ("tasks_example.work.fail", {"message": "boom"}, "exception", "boom"),
    ("testtasks.raise_bad_str", {}, "exception", "whose str() raised"),
    ("testtasks.raise_unicode", {}, "exception", "échec: ファイルが見つかりません ✗"),
    ("testtasks.not_json", {}, "bad-result", "result['when'] is a object"),
])
def test_bad_inputs_fail_clearly_and_the_worker_keeps_running(client, worker, path, params, reason, message):
    w = worker.start()
    bad = client.queue_job(path, params, check=False)  # what the worker does with it (enqueue would refuse some)
    job = client.wait(bad, timeout_s=10)
    assert job.status == "failed" and job.reason == reason
    assert message in job.exc_message
    assert job.traceback and job.attempt == 1 and job.retries == 0
    assert client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10).result == 2
    assert worker.alive(w)


def test_flaky_task_succeeds_after_retries_with_backoff(client, worker):
    job_id = client.queue_job("tasks_example.work.flaky", {"fail_times": 2})
    worker.start()
    job = client.wait(job_id, timeout_s=20)
    assert job.status == "success" and job.result == {"attempt": 3}
    assert job.retries == 2 and job.exc_type is None and job.exc_message is None and job.traceback is None
    statuses = [h["status"] for h in job.history]
    assert statuses == ["queued"] + ["claimed", "started", "retry"] * 2 + ["claimed", "started", "success"]
    starts = [h["at"] for h in job.history if h["status"] == "started"]
    # retry_delay_s=0.2, backoff 2, equal jitter: waits 0.1-0.2 s then 0.2-0.4 s
    assert starts[1] - starts[0] >= 0.1 and starts[2] - starts[1] >= 0.2


@pytest.mark.timing
def test_retries_start_on_time(client, worker):
    """A retry's due time wakes the idle worker (which blocks up to 1 s between looks)."""
    job_id = client.queue_job("tasks_example.work.flaky", {"fail_times": 2})
    worker.start()
    starts = [h["at"] for h in client.wait(job_id, timeout_s=20).history if h["status"] == "started"]
    assert starts[1] - starts[0] < 0.2 + 0.25 and starts[2] - starts[1] < 0.4 + 0.25


def test_retries_end_in_maxretries(client, worker):
    worker.start()
    a = client.queue_job("testtasks.always_retry")
    b = client.queue_job("testtasks.always_fail_retried")
    ja, jb = client.wait([a, b], timeout_s=20)
    for j in (ja, jb):
        assert j.status == "maxretries" and j.attempt == 3 and j.retries == 2
    assert jb.exc_type == "ConnectionError"


def test_timeout(client, worker):
    worker.start()
    job = client.wait(client.queue_job("testtasks.too_slow", {"seconds": 5}), timeout_s=10)
    assert job.status == "timeout" and 0.3 <= job.run_s < 4  # interrupted: the task sleeps 5 s


def test_cpu_bound_overrun_is_reported_by_the_watchdog(client, worker):
    worker.start()
    job = client.wait(client.queue_job("testtasks.hog", {"seconds": 1.5}), timeout_s=15)
    # gevent.Timeout cannot interrupt code that never yields: the job overruns, says so, and
    # still ends timeout (its result discarded) rather than success
    assert job.overrun and "without yielding" in job.overrun and "hog" in job.overrun
    assert job.status == "timeout" and "past its timeout of 0.5 s" in job.exc_message


def test_cancel_a_queued_job(client, worker):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, delay=30)
    client.cancel(job_id)
    assert client.get_job(job_id).status == "cancel"
    worker.burst()
    assert client.get_job(job_id).status == "cancel"
    with pytest.raises(InvalidTransition, match="its status is cancel"):
        client.cancel(job_id)


def test_abort_a_running_job(client, worker):
    worker.start()
    job_id = client.queue_job("testtasks.sleep", {"seconds": 30})
    wait_until(lambda: client.get_job(job_id).status == "started", 10, "start")
    with pytest.raises(InvalidTransition):
        client.cancel(job_id)
    client.abort(job_id)
    job = client.wait(job_id, timeout_s=10)
    assert job.status == "abort" and job.run_s < 10


def test_a_worker_with_one_greenlet_aborts_one_job_and_runs_the_next(client, worker):
    """Jobs run one after another in the same runner greenlet: the abort reaches only the
    job it was meant for, and nothing one job set in its context is seen by the next."""
    worker.start(greenlets=1)
    first = client.queue_job("testtasks.context_leak", {"value": "first"})
    slow = client.queue_job("testtasks.sleep", {"seconds": 30})
    after = [client.queue_job("testtasks.context_leak", {"value": f"after{i}"}) for i in range(3)]
    assert client.wait(first, timeout_s=10).result is None
    wait_until(lambda: client.get_job(slow).status == "started", 10, "start")
    client.abort(slow)
    assert client.wait(slow, timeout_s=10).status == "abort"
    jobs = client.wait(after, timeout_s=10)
    assert [(j.status, j.result) for j in jobs] == [("success", None)] * 3


def test_what_a_job_leaves_on_its_greenlet_never_reaches_the_next_job(client, worker):
    """A timer or kill a job leaves aimed at its greenlet, and greenlet-local state it
    sets, end with it: the jobs after it (on the only greenlet) are untouched."""
    worker.start(greenlets=1)
    ids = [client.queue_job("testtasks.leave_timeout", {"seconds": 0.1}),
           client.queue_job("testtasks.later_kill", {"delay_s": 0.1})]
    ids += [client.queue_job("testtasks.sleep", {"seconds": 0.05}) for _ in range(8)]
    ids += [client.queue_job("testtasks.local_leak", {"value": f"v{i}"}) for i in range(3)]
    jobs = client.wait(ids, timeout_s=20)
    assert [j.status for j in jobs] == ["success"] * len(ids), [(j.path, j.status, j.exc_message) for j in jobs]
    assert [j.result for j in jobs[-3:]] == [None] * 3
    late = client.queue_job("testtasks.add", {"a": 1, "b": 1})  # after the stray kills fired
    assert client.wait(late, timeout_s=10).result == 2


def test_wait_on_jobs_already_final_returns_their_documents_and_refuses_an_unknown_id(client, worker):
    worker.start()
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    first = client.wait(job_id, timeout_s=10)
    again = client.wait(job_id, timeout_s=10)  # final already: the document comes with the registration
    assert (again.status, again.result, again.path) == ("success", 3, "testtasks.add")
    assert [h["status"] for h in again.history] == [h["status"] for h in first.history] == \
        ["queued", "claimed", "started", "success"]
    with pytest.raises(JobNotFound):
        client.wait([job_id, "no-such-job"], timeout_s=5)


def test_wait_returns_whole_documents_however_large_or_many(client, worker):
    """Small documents come with wait's registration (the first 20), large ones and the
    rest are read after it; either way wait returns what get_job does."""
    worker.start()
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(120)])
    ids += [client.queue_job("testtasks.blob", {"kb": kb}) for kb in (1, 64, 600)]
    first = client.wait(ids, timeout_s=30)  # most through notifications, as they end
    again = client.wait(ids, timeout_s=30)  # all final already
    assert [j.result for j in again[:120]] == [i + 1 for i in range(120)]
    assert [len(j.result) for j in again[120:]] == [512, 64 * 512, 600 * 512]
    for a, b in zip(first + again, [client.get_job(i) for i in ids] * 2):
        assert a == b


def test_requeue_a_failed_job_runs_it_again(client, worker):
    job_id = client.queue_job("tasks_example.work.fail")
    worker.burst()
    assert client.get_job(job_id).status == "failed"
    client.requeue(job_id)
    queued = client.get_job(job_id)  # what the first attempt left is gone
    assert queued.status == "queued" and queued.worker is None and queued.started_at is None
    assert queued.report == {} and queued.exc_message is None
    worker.start()
    job = client.wait(job_id, timeout_s=10)
    assert job.status == "failed" and job.attempt == 2
    assert [h["status"] for h in job.history] == ["queued", "claimed", "started", "failed"] * 2


def test_wait_times_out_with_the_pending_ids(client):
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2})
    t = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        client.wait([job_id], timeout_s=0.3)
    assert err.value.pending == [job_id] and 0.3 <= time.monotonic() - t < 2


def test_enqueue_refuses_bad_queue_priority_and_delay(client):
    for kwargs in ({"queue": "a:b"}, {"priority": 1000}, {"delay": -1}):
        with pytest.raises(InvalidParams):
            client.queue_job("testtasks.add", {"a": 1, "b": 2}, **kwargs)


def test_final_jobs_expire_after_their_status_ttl(client, worker):
    worker.start(ttl_s="success:2,failed:100")
    ok, bad = client.queue_job("testtasks.add", {"a": 1, "b": 1}), client.queue_job("tasks_example.work.fail")
    client.wait([ok, bad], timeout_s=10)
    assert 0 < client.redis.ttl(client.broker.keys.job(ok)) <= 2
    assert 2 < client.redis.ttl(client.broker.keys.job(bad)) <= 100
    assert [k for k in client.redis.scan_iter(f"{client.settings.key_prefix}:*") if ok.partition(":")[2] in k] == [
        client.broker.keys.job(ok)]  # its history is in its document


@pytest.mark.parametrize("where", ["exception", "result", "progress", "log"])
def test_lone_surrogates_in_job_output_are_stored_escaped_and_the_worker_lives(client, worker, where):
    w = worker.start()
    job = client.wait(client.queue_job("testtasks.surrogate", {"where": where}), timeout_s=10)
    if where == "exception":
        assert job.status == "failed" and "caf\\udce9.txt" in job.exc_message
    elif where == "result":
        assert job.status == "failed" and job.reason == "bad-result" and "surrogate" in job.exc_message
    else:
        assert job.status == "success"
    assert client.wait(client.queue_job("testtasks.add", {"a": 1, "b": 1}), timeout_s=10).result == 2
    assert worker.alive(w)


def test_params_with_surrogates_cycles_or_bad_delays_are_refused_before_anything_is_stored(client):
    cyc: dict = {}
    cyc["me"] = cyc
    for params, msg in (({"p": "bad \udcff"}, "surrogate"), (cyc, "circular reference")):
        with pytest.raises(InvalidParams, match=msg):
            client.queue_job("testtasks.add", params)
    for delay in (float("nan"), float("inf"), 1e15):
        with pytest.raises(InvalidParams, match="delay"):
            client.queue_job("testtasks.add", {"a": 1, "b": 1}, delay=delay)
    assert client.store.counts()["queued"] == 0


def test_a_task_raising_greenlet_exit_fails_instead_of_looping(client, worker):
    worker.start()
    job = client.wait(client.queue_job("testtasks.raise_greenlet_exit"), timeout_s=10)
    assert job.status == "failed" and job.attempt == 1


def test_circular_result_is_a_bad_result(client, worker):
    worker.start()
    job = client.wait(client.queue_job("testtasks.circular"), timeout_s=10)
    assert job.status == "failed" and job.reason == "bad-result" and "circular" in job.exc_message


def test_a_burst_worker_runs_the_retry_of_a_job_it_just_ran(client, worker):
    """--burst ends once nothing is ready, running or delayed: an outcome not yet recorded
    may be a retry, which is delayed (found in-process: it exited before recording it)."""
    job_id = client.queue_job("tasks_example.work.flaky", {"fail_times": 1})
    worker.burst()
    assert client.get_job(job_id).status == "success"
