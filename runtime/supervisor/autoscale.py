"""Autoscaling: the supervisor follows the queues (``runtime worker --processes MIN:MAX``).

The signal is the larger of the queue latency, the age of the job each served queue would
run next (its due time against the Redis clock; 0 for an empty queue), the largest over
the queues (:func:`queue_latency`, also exported as the gauge ``runtime.queue.latency``),
and the time to drain the ready jobs at the rate the processes ended jobs over the last
step. Rules (:meth:`Autoscaler.decide`):

- up: signal over ``target_s`` and fewer than MAX processes: as many more as the
  signal asks for (``ceil(active * signal / target)``, at least one, at most MAX), then
  no other step up for ``warmup_s`` seconds (new processes need that to start and drain);
  never over the memory budget: a process is added only while the host's available
  memory exceeds ``mem_limit_bytes`` (``--mem-limit``) per process added;
- down: signal under half the target for ``cooldown_s`` seconds running, more than MIN
  processes, and one of them idle (running no job, by the registry): that one stops, by
  drain (SIGUSR1: it stops claiming and finishes any job it took meanwhile, however long
  it takes; no grace cut); then the cool-down starts again. No busy process is stopped:
  while none is idle, the step down waits (looked at again every step).

Each decision is an event (``runtime events``: event ``scale``, reason up/down/memory,
detail "processes 1 -> 3: oldest due job 12.0 s > target 5 s").
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class AutoscalePolicy:
    """MIN and MAX processes, the latency target and the damping, in seconds."""

    min: int
    max: int
    target_s: float = 5.0
    warmup_s: float = 10.0
    cooldown_s: float = 60.0


def parse_processes(text: str | int | None) -> tuple[int | None, tuple[int, int] | None]:
    """``--processes`` as given: "N" -> (N, None); "MIN:MAX" -> (MIN, (MIN, MAX)). Raises
    ConfigError (one line) for anything else, or MIN < 1, or MAX < MIN."""
    if text is None or isinstance(text, int):
        return text, None
    lo, colon, hi = str(text).partition(":")
    try:
        low = int(lo)
        high = int(hi) if colon else None
    except ValueError:
        raise ConfigError(f"--processes must be N or MIN:MAX (e.g. 1:8), got {text!r}") from None
    if high is None:
        if low < 1:
            raise ConfigError(f"--processes must be at least 1 (or MIN:MAX), got {text!r}")
        return low, None
    if low < 1 or high < low:
        raise ConfigError(f"--processes MIN:MAX needs 1 <= MIN <= MAX, got {text!r}")
    return low, (low, high)


def make_policy(scale: tuple[int, int] | None, target_s: float | None, warmup_s: float | None,
                cooldown_s: float | None) -> AutoscalePolicy | None:
    """The policy of ``--processes MIN:MAX`` (``scale``, parse_processes) with the
    ``--autoscale-*`` options given (None: the default); None without MIN:MAX. Raises
    ConfigError (one line) for a target of 0 or less, or an ``--autoscale-*`` option
    given without MIN:MAX (it would do nothing)."""
    given = {"--autoscale-target": target_s, "--autoscale-warmup": warmup_s, "--autoscale-cooldown": cooldown_s}
    if scale is None:
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise ConfigError(f"{', '.join(named)} needs --processes MIN:MAX (autoscaling), e.g. --processes 1:4")
        return None
    if target_s is not None and not target_s > 0:
        raise ConfigError(f"--autoscale-target must be more than 0 seconds, got {target_s:g}")
    defaults = AutoscalePolicy(*scale)
    return AutoscalePolicy(*scale, defaults.target_s if target_s is None else target_s,
                           defaults.warmup_s if warmup_s is None else warmup_s,
                           defaults.cooldown_s if cooldown_s is None else cooldown_s)


def queue_latency(redis: Any, keys: Any, queues: Iterable[str]) -> dict[str, float]:
    """Per queue, the age in seconds of the job it would run next, by the Redis clock (0
    when empty): a ready score is ``-priority * 1e13 + due ms`` (runtime.broker.keys), so
    the due time is the score modulo 1e13. One round trip (two on a Redis Cluster, whose
    pipelines take no keyless command: TIME is asked of one node after)."""
    from redis.cluster import RedisCluster

    names = list(queues)
    clustered = isinstance(redis, RedisCluster)
    pipe = redis.pipeline(transaction=False)
    if not clustered:
        pipe.time()
    for q in names:
        pipe.zrange(keys.ready(q), 0, 0, withscores=True)
    replies = pipe.execute()
    t = redis.time() if clustered else replies.pop(0)
    now = float(t[0]) + float(t[1]) / 1e6
    return {q: max(0.0, now - (float(head[0][1]) % 1e13) / 1000) if head else 0.0
            for q, head in zip(names, replies)}


def backlog(redis: Any, keys: Any, queues: Iterable[str]) -> int:
    """Ready jobs (due now) in ``queues``, one round trip."""
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        pipe.zcard(keys.ready(q))
    return sum(int(n) for n in pipe.execute())


def available_memory() -> int:
    """Bytes of memory the host can still give (psutil)."""
    import psutil
    return int(psutil.virtual_memory().available)


class Autoscaler:
    """Decides the number of worker processes; see the module's rules. ``clock`` is
    monotonic seconds, ``memory`` gives the host's available bytes (both for tests)."""

    def __init__(self, policy: AutoscalePolicy, mem_limit_bytes: int | None = None,
                 clock: Any = time.monotonic, memory: Any = available_memory) -> None:
        self.policy = policy
        self.mem_limit_bytes = mem_limit_bytes
        self.clock = clock
        self.memory = memory
        self.last_up = -math.inf
        self.calm_since: float | None = None
        self.memory_refused = False
        self.last_done: tuple[float, int] | None = None

    def drain_s(self, ready: int, jobs_done: int) -> float:
        """Seconds to run ``ready`` jobs at the rate the processes ended jobs since the last
        call (``jobs_done``: their total, which may drop when one exits); 0 when unknown."""
        now = self.clock()
        last, self.last_done = self.last_done, (now, jobs_done)
        if last is None or now <= last[0] or not ready:
            return 0.0
        rate = max(0, jobs_done - last[1]) / (now - last[0])
        return ready / rate if rate > 0 else 0.0

    def decide(self, active: int, latency: float, drain_s: float = 0.0, idle: int = 1) -> tuple[int, str, str]:
        """(processes wanted, reason "up"/"down"/"memory" or "" for no change, detail) for
        ``active`` processes, ``idle`` of them running no job, at queue latency ``latency``
        with the ready jobs drained in ``drain_s`` at the current rate (seconds)."""
        p, now = self.policy, self.clock()
        what = f"oldest due job {latency:.1f} s"
        if drain_s > latency:
            what, latency = f"ready jobs drained in {drain_s:.1f} s", drain_s
        if latency > p.target_s:
            self.calm_since = None
            if active >= p.max or now - self.last_up < p.warmup_s:
                return active, "", ""
            want = min(p.max, max(active + 1, math.ceil(max(active, 1) * latency / p.target_s)))
            want, refused = self._within_memory(active, want)
            if want <= active:
                first = not self.memory_refused
                self.memory_refused = True
                return active, ("memory" if first else ""), refused
            self.memory_refused = False
            self.last_up = now
            return want, "up", f"processes {active} -> {want}: {what} > target {p.target_s:g} s"
        if latency >= p.target_s / 2 or active <= p.min:
            self.calm_since = None
            return active, "", ""
        if self.calm_since is None:
            self.calm_since = now
        if now - self.calm_since < p.cooldown_s or not idle:  # none idle: no step down yet
            return active, "", ""
        self.calm_since = now  # the next step down after another cool-down
        return active - 1, "down", (f"processes {active} -> {active - 1}: {what} < "
                                    f"{p.target_s / 2:g} s for {p.cooldown_s:g} s")

    def _within_memory(self, active: int, want: int) -> tuple[int, str]:
        """``want`` cut to what the host's available memory holds at ``mem_limit_bytes`` per
        added process (no limit: unchanged), and why when cut."""
        if not self.mem_limit_bytes:
            return want, ""
        fits = active + int(self.memory() // self.mem_limit_bytes)
        if fits >= want:
            return want, ""
        return fits, (f"processes {active} -> {want} wanted, {fits} fit: available memory "
                      f"{self.memory() / 2**20:.0f} MiB at --mem-limit {self.mem_limit_bytes / 2**20:.0f} MiB each")
