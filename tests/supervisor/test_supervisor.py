"""Process tests of the supervisor: memory limits, recycling, the hard ceiling, signals."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

from helpers import cli, wait_until

from runtime.process import host_pid


def _events(client, kind=None):
    found = [json.loads(e) for e in client.redis.lrange(client.broker.keys.events, 0, -1)]
    return [e for e in found if kind is None or e["event"] == kind]


def _entries(client):
    keys = client.broker.keys
    out = [client.redis.hgetall(keys.worker(w)) for w in client.redis.smembers(keys.workers)]
    return [e for e in out if e]


def _children(client, sup_pid):
    """Registry entries of the live, non-recycling workers started by supervisor ``sup_pid``."""
    sups = {e["id"] for e in _entries(client) if e.get("kind") == "supervisor" and e["pid"] == str(sup_pid)}
    return [e for e in _entries(client) if e.get("supervisor") in sups and e.get("state") == "running"]


def _ran_once(job):
    """Started once (a claim of a prefetched job handed back unrun at a stop has no
    ``started`` entry)."""
    ok = [h["status"] for h in job.history].count("started") == 1
    if not ok:
        print(job.id, job.history)
    return ok


def test_mem_limit_recycles_the_worker_and_loses_no_job(client, workers):
    ids = client.queue_jobs("tasks_example.work.leaky", [{"kilobytes": 1024}] * 80)
    sup = workers.start("--mem-limit", "75M", "--greenlets", "4")
    jobs = client.wait(ids, timeout_s=60)
    assert Counter(j.status for j in jobs) == {"success": 80}
    pids = {host_pid(j.worker)[1] for j in jobs}
    assert len(pids) >= 2 and sup.pid not in pids  # recycled: jobs ran in several processes
    # none ran twice, except one interrupted when a grace period expired (none here: 5 s)
    assert all(_ran_once(j) for j in jobs)
    events = _events(client, "recycle")
    assert events and all(e["reason"] == "mem-limit" for e in events)
    e = events[-1]
    assert e["rss_bytes"] > e["limit_bytes"] == 75 * 2**20
    assert e["jobs_run"] > 0 and e["top_growers"] and e["top_growers"][0]["job"] in ids
    assert e["pid"] in pids
    # and a replacement is running
    wait_until(lambda: len(_children(client, sup.pid)) == 1, 10, "one worker process under the supervisor")


def test_two_processes_return_to_two_and_the_queue_drains(client, workers):
    sup = workers.start("--processes", "2", "--mem-limit", "70M", "--greenlets", "4")
    wait_until(lambda: len(_children(client, sup.pid)) == 2, 10, "two worker processes")
    ids = client.queue_jobs("tasks_example.work.leaky", [{"kilobytes": 1024}] * 120)
    jobs = client.wait(ids, timeout_s=90)
    assert Counter(j.status for j in jobs) == {"success": 120}
    assert len(_events(client, "recycle")) >= 2
    wait_until(lambda: len(_children(client, sup.pid)) == 2, 10, "process count back to 2")
    assert client.reader.queues()["queues"]["default"]["ready"] == 0
    assert "worker processes" in _supervisor_line(client)


def _supervisor_line(client):
    res = cli(client.settings, "workers")
    assert res.exit_code == 0, res.output
    return res.output.replace("processes", "worker processes", 1)


def test_max_jobs_recycles_after_n_jobs(client, workers):
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(25)])
    sup = workers.start("--max-jobs", "10", "--greenlets", "3")
    jobs = client.wait(ids, timeout_s=60)
    assert all(j.status == "success" and _ran_once(j) for j in jobs)
    per_worker = Counter(j.worker for j in jobs)
    assert len(per_worker) >= 3 and max(per_worker.values()) <= 10
    events = _events(client, "recycle")
    assert {e["reason"] for e in events} == {"max-jobs"} and {e["jobs_run"] for e in events} == {10}
    # the log and the event tell one story: the limit was crossed at 10 jobs run; the
    # worker's own count, said when it stops, is of the jobs it ran in all
    wait_until(lambda: "; recycled at: 10 jobs run (max_jobs=10), then finished the jobs running"
               in workers.log(sup), 10, "a recycled worker's stop line")
    assert "recycle (max-jobs)" in cli(client.settings, "events").stdout


def test_a_job_past_the_hard_limit_is_requeued_at_once_then_fails_worker_lost(client, workers):
    # jobs running beside the hog when its worker is killed are requeued too, then run
    # alone (the hog as well), so only the hog is charged and ends worker-lost
    beside = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * 3)
    hog = client.queue_job("testtasks.allocate", {"mb": 160, "hold_s": 30})
    behind = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(20)])
    for _ in range(2):  # two more reapers, that see each killed worker dead too
        workers.start("--greenlets", "2", "--queues", "elsewhere")
    workers.start("--mem-limit", "70M", "--mem-hard-limit", "120M", "--greenlets", "4", mem_check_interval_s=0.1)
    job = client.wait(hog, timeout_s=60)
    assert job.status == "failed" and job.reason == "worker-lost"
    killed = "its worker process was killed: RSS"
    notes = [h.get("note") or "" for h in job.history]
    assert sum(n.startswith("worker lost, requeued: " + killed) for n in notes) == 2  # requeued at once, twice
    assert killed in job.exc_message and "over the hard limit 120.0 MiB" in job.exc_message
    # the kill that failed it is recorded just after its reap; a kill may also find the hog
    # listed as not started yet (its worker's last heartbeat predates its start): no charge
    kills = wait_until(lambda: list(_events(client, "kill")) if any(
        k["failed"] == 1 for k in _events(client, "kill")) else None, 10, "the kill event that failed it")
    assert len(kills) >= 3 and all(k["rss_bytes"] > 120 * 2**20 for k in kills)
    running = [[j["id"] for j in k["running"]] for k in kills]
    assert sum(hog in r for r in running) == 3 and all(hog in r + k["unstarted"] for r, k in zip(running, kills))
    assert all(j["path"] == "testtasks.allocate" for k in kills for j in k["running"] if j["id"] == hog)
    # one event a kill (besides the recycle its soft limit asked for): the reapers that saw
    # the killed worker dead left its jobs and its event to its supervisor
    killed_workers = {k["worker"] for k in kills}
    assert len(killed_workers) == len(kills)
    assert not [e for e in client.broker.registry.events(100) if e["worker"] in killed_workers
                and e["event"] in ("lost", "crash")]
    assert all(j.status == "success" for j in client.wait(beside + behind, timeout_s=30))


def _graceful(client, workers, signal_group: bool, send: bool = True):
    sup = workers.start("--processes", "2", "--greenlets", "3", own_group=signal_group)
    wait_until(lambda: len(_children(client, sup.pid)) == 2, 10, "two worker processes")
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * 4)
    wait_until(lambda: sum(j.status == "started" for j in client.store.get_many(ids)) == 4, 10, "jobs to start")
    if not send:
        pass
    elif signal_group:
        os.killpg(sup.pid, signal.SIGTERM)  # as a container runtime or a terminal does
    else:
        sup.send_signal(signal.SIGTERM)
    return sup, ids


def test_sigterm_to_the_supervisor_lets_running_jobs_finish(client, workers):
    sup, ids = _graceful(client, workers, signal_group=False)
    assert sup.wait(15) == 0
    assert all(j.status == "success" and _ran_once(j) for j in client.store.get_many(ids))
    assert _entries(client) == []  # supervisor and workers deregistered


def test_sigterm_to_the_process_group_behaves_the_same(client, workers):
    sup, ids = _graceful(client, workers, signal_group=True)
    assert sup.wait(15) == 0
    assert all(j.status == "success" and _ran_once(j) for j in client.store.get_many(ids))
    assert _entries(client) == []
    log = workers.log(sup)
    assert log.count("got signal 15: stopping;") == 2  # each worker got it once, not twice


def test_sigterm_to_every_process_at_once_is_one_graceful_stop(client, workers):
    # as systemd (KillMode=control-group) or pkill do: each worker gets it directly and
    # from its supervisor, which must not count as a second signal
    sup, ids = _graceful(client, workers, signal_group=False, send=False)
    for e in _children(client, sup.pid):
        os.kill(int(e["pid"]), signal.SIGTERM)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(15) == 0
    assert all(j.status == "success" and _ran_once(j) for j in client.store.get_many(ids))


def test_second_signal_to_the_supervisor_interrupts_and_requeues(client, workers):
    sup = workers.start("--processes", "2", "--greenlets", "2")
    wait_until(lambda: len(_children(client, sup.pid)) == 2, 10, "two worker processes")
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 60}] * 4)
    wait_until(lambda: sum(j.status == "started" for j in client.store.get_many(ids)) == 4, 10, "jobs to start")
    sup.send_signal(signal.SIGTERM)
    wait_until(lambda: workers.log(sup).count("stopping; running jobs") == 2, 5, "first signal forwarded")
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(10) == 0
    jobs = client.store.get_many(ids)
    assert all(j.status == "interrupt" and j.retries == 0 for j in jobs)
    assert client.reader.queues()["queues"]["default"]["ready"] == 4


def test_a_worker_that_dies_is_restarted_and_its_jobs_requeued_at_once(client, workers):
    sup = workers.start("--processes", "1", "--greenlets", "2")
    wait_until(lambda: len(_children(client, sup.pid)) == 1, 10, "a worker process")
    sleeper = client.queue_job("testtasks.sleep", {"seconds": 0.2})
    wait_until(lambda: client.get_job(sleeper).status == "started", 10, "the sleeper to start")
    victim = int(_children(client, sup.pid)[0]["pid"])
    os.kill(victim, signal.SIGKILL)
    job = client.wait(sleeper, timeout_s=20)
    assert job.status == "success" and job.attempt == 2
    wait_until(lambda: [e["pid"] for e in _children(client, sup.pid)] not in ([], [str(victim)]), 10,
               "a new worker process")


def test_a_crashed_worker_process_is_an_event_naming_its_job_and_task(client, workers):
    poison = client.queue_job("tasks_example.work.crash")
    sup = workers.start("--processes", "1", "--greenlets", "2")
    crashes = wait_until(lambda: _events(client, "crash") or None, 20, "a crash event")
    e = crashes[0]
    assert e["reason"] == "exit-code-13" and e["supervisor"] and e["pid"] != sup.pid
    assert {"id": poison, "path": "tasks_example.work.crash"} in e["running"] and e["requeued"] + e["failed"] >= 1
    assert "exited with code 13" in e["detail"]
    text = cli(client.settings, "events").stdout
    assert "crash (exit-code-13)" in text and f"{poison} (tasks_example.work.crash)" in text
    # the workers' JSON: one shape for supervisors and workers, lists for lists
    wait_until(lambda: len(_children(client, sup.pid)) == 1, 20, "a worker process again")
    shown = json.loads(cli(client.settings, "workers", "--json").stdout)
    assert {e["kind"] for e in shown} == {"supervisor", "worker"}
    assert len({tuple(e) for e in shown}) == 1 and all(e["queues"] == ["default"] for e in shown)
    assert all(e["greenlets"] is None for e in shown if e["kind"] == "supervisor")
