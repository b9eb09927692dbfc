"""One worker death, one event: the reaper that takes a dead worker's jobs back alone
records its ``lost`` event, naming its jobs and what became of them, however many
reapers see it dead at once (on a cluster the per-queue reap calls and the registry
cleanup are not one atomic step; on a standalone Redis they are two round trips too)."""

from __future__ import annotations

import signal
import subprocess

from helpers import wait_until

from runtime.client import Client
from runtime.process import host_pid, hostname
from runtime.worker.reaper import Reaper

ON_CLUSTER_TOO = True

WHY = "its worker process died (it stopped heartbeating and its pid is gone)"


def _lost_events(client: Client, worker_id: str) -> list[dict]:
    return [e for e in client.broker.registry.events(100) if e["event"] == "lost" and e["worker"] == worker_id]


def _dead_worker_running(client: Client, n: int) -> tuple[str, list[str]]:
    """A registered worker of this host whose process is gone, having claimed and started
    ``n`` jobs; returns (its id, the job ids)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    wid = f"{hostname()}.{gone.pid}.dead0"
    client.broker.registry.write_entry(wid, {"host": hostname(), "pid": str(gone.pid), "kind": "worker"})
    ids = client.queue_jobs("testtasks.add", [{"a": i, "b": 1} for i in range(n)])
    claimed = client.broker.claim(wid, n, ["default"])[2]
    assert sorted(c.id for c in claimed) == sorted(ids)
    for c in claimed:  # each one's start record, as the worker writes it before running it
        client.redis.hset(client.broker.keys.job(c.id), "began", str(c.attempt))
    return wid, ids


def test_two_reapers_that_see_one_dead_worker_record_one_event_with_its_jobs(client: Client) -> None:
    wid, ids = _dead_worker_running(client, 5)
    first, second = Reaper(client.broker, "reaper-a"), Reaper(client.broker, "reaper-b")
    assert first.dead() == [wid] and second.dead() == [wid]  # both read the registry before either cleaned it
    assert first.take_back([wid], WHY, event={"event": "lost", "reason": "worker-lost"}) == (5, 0)
    assert second.take_back([wid], WHY, event={"event": "lost", "reason": "worker-lost"}) == (0, 0)
    [event] = _lost_events(client, wid)
    assert sorted(j["id"] for j in event["running"]) == sorted(ids)
    assert (event["requeued"], event["failed"], event["pid"]) == (5, 0, host_pid(wid)[1])
    assert all(j.status == "queued" and j.lost == 1 for j in client.store.get_many(ids))
    assert wid not in client.broker.registry.ids()


def test_a_dead_worker_claimed_by_another_is_left_to_it_and_its_event_too(client: Client) -> None:
    """A supervisor (or a watchdog) claims its worker before it kills it: a reaper that
    sees it dead meanwhile leaves its jobs and its event to that one."""
    wid, ids = _dead_worker_running(client, 3)
    assert client.broker.registry.claim_lost([wid], "supervisor-1") == [wid]
    assert client.broker.registry.claim_lost([wid], "supervisor-1") == [wid]  # its own claim counts again
    reaper = Reaper(client.broker, "reaper-a")
    assert reaper.dead() == [wid] and reaper.reap_once() == (0, 0)
    assert all(j.status == "started" for j in client.store.get_many(ids)) and not _lost_events(client, wid)
    assert Reaper(client.broker, "supervisor-1").take_back([wid], WHY, event={"event": "crash", "reason": "signal-9"}) \
        == (3, 0)
    [event] = [e for e in client.broker.registry.events(100) if e["worker"] == wid]
    assert (event["event"], event["requeued"], len(event["running"])) == ("crash", 3, 3)


def test_a_worker_killed_mid_jobs_beside_two_reapers_gives_one_lost_event(client: Client, workers) -> None:
    others = [workers.start("--greenlets", "2", "--queues", "elsewhere") for _ in range(2)]  # two more reapers
    victim = workers.start("--greenlets", "8", "--prefetch", "0")
    for w in [*others, victim]:
        workers.ready(w)
    wid = wait_until(lambda: next((w for w in client.broker.registry.ids() if host_pid(w)[1] == victim.pid), None),
                     15, "the worker to register")
    ids = client.queue_jobs("testtasks.sleep", [{"seconds": 0.5}] * 6)
    wait_until(lambda: all(client.redis.hget(client.broker.keys.job(j), "began") == "1" for j in ids), 15,
               "its jobs to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    wait_until(lambda: wid not in client.broker.registry.ids(), 10, "its jobs taken back and its entry gone")
    workers.start("--greenlets", "8")
    jobs = client.wait(ids, timeout_s=60)  # run again, one by one (alone): each reaper has made passes since
    assert all(j.status == "success" and j.attempt == 2 and j.lost == 1 for j in jobs), \
        [(j.status, j.attempt, j.lost) for j in jobs]
    assert all(w.poll() is None for w in others)
    [event] = _lost_events(client, wid)
    assert sorted(j["id"] for j in event["running"]) == sorted(ids)
    assert (event["requeued"], event["failed"], event["reason"]) == (6, 0, "worker-lost")


def test_runtime_events_says_how_many_of_a_lost_worker_s_jobs_had_not_started(client: Client, settings) -> None:
    """A dead worker's prefetched jobs (claimed, never started) are requeued uncharged; the
    event's text names the running ones and counts the others, so that its 'requeued'
    adds up."""
    from helpers import cli
    wid, ids = _dead_worker_running(client, 5)
    for job_id in ids[3:]:  # claimed ahead, never started
        client.redis.hdel(client.broker.keys.job(job_id), "began")
    Reaper(client.broker, "reaper-a").take_back([wid], WHY, event={"event": "lost", "reason": "worker-lost"})
    text = cli(settings, "events").stdout
    line = next(x for x in text.splitlines() if "running jobs:" in x)
    assert line.count("testtasks.add") == 3 and "; 2 prefetched, not started; requeued 5, failed 0" in line, text
