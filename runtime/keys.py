"""Every Redis key name runtime uses, in one place.

The Lua scripts build per-job keys from the same prefix (``{prefix}:j:{id}`` ...); the
shapes below are the contract they follow, so keep both in step.

| key                          | type | holds                                             |
|------------------------------|------|---------------------------------------------------|
| {p}:j:{id}                   | hash | the job document (fields of runtime.job.Job)     |
| {p}:h:{id}                   | list | status history, one JSON object per change        |
| {p}:n:{id}                   | set  | notify lists of clients waiting for the job       |
| {p}:q:{queue}                | zset | ready jobs; score = -priority*1e13 + due ms       |
| {p}:s:{queue}                | zset | delayed / retrying jobs; score = due ms           |
| {p}:wake:{queue}             | list | at most one wake-up token for blocked workers     |
| {p}:inflight                 | zset | claimed jobs; score = claim deadline ms           |
| {p}:queues                   | set  | names of queues ever used                         |
| {p}:st:{status}              | zset | jobs by status; score = time of the change (s)    |
| {p}:workers                  | set  | ids of registered workers                         |
| {p}:w:{wid}                  | hash | worker registry entry (expires: worker_ttl_s)     |
| {p}:w:{wid}:running          | set  | ids of the jobs that worker is running            |
| {p}:w:{wid}:abort            | set  | ids to abort, read by that worker's heartbeat     |
| {p}:w:{wid}:jobs             | list | jobs claimed for an idle worker by enqueue.lua    |
| {p}:idle:{queue}             | zset | idle workers blocked on their jobs list           |
| {p}:mongo:synced             | str  | reconcile sweep: Redis changes up to this time (s) are in MongoDB |
| {p}:mongo:adopt_after        | str  | reconcile sweep: MongoDB docs checked up to this changed_at (s)   |
| {p}:mongo:lock               | str  | held (with a TTL) by the one worker sweeping now  |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "rt"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:j:{job_id}"

    def history(self, job_id: str) -> str:
        return f"{self.prefix}:h:{job_id}"

    def notify(self, job_id: str) -> str:
        return f"{self.prefix}:n:{job_id}"

    def ready(self, queue: str) -> str:
        return f"{self.prefix}:q:{queue}"

    def scheduled(self, queue: str) -> str:
        return f"{self.prefix}:s:{queue}"

    def wake(self, queue: str) -> str:
        return f"{self.prefix}:wake:{queue}"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    def status(self, status: str) -> str:
        return f"{self.prefix}:st:{status}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def events(self) -> str:
        """List of recycle and kill events (JSON), newest first."""
        return f"{self.prefix}:events"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:w:{worker_id}"

    def running(self, worker_id: str) -> str:
        return f"{self.prefix}:w:{worker_id}:running"

    def aborts(self, worker_id: str) -> str:
        return f"{self.prefix}:w:{worker_id}:abort"

    def handoff(self, worker_id: str) -> str:
        return f"{self.prefix}:w:{worker_id}:jobs"

    def idle(self, queue: str) -> str:
        return f"{self.prefix}:idle:{queue}"

    def waiter(self, token: str) -> str:
        """A client's private notify list (``wait()``), expiring shortly after use."""
        return f"{self.prefix}:wait:{token}"

    def mongo(self, what: str) -> str:
        """State of the MongoDB reconcile sweep: ``synced``, ``adopt_after`` or ``lock``."""
        return f"{self.prefix}:mongo:{what}"

def host_pid(worker_id: str) -> tuple[str | None, int | None]:
    """Host and pid from a worker id ``{host}.{pid}.{random}``."""
    parts = worker_id.rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None, None
