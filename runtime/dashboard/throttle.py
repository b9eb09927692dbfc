"""Failed credential checks (passwords and tokens), counted per client address and per
user name over a sliding window (:class:`Throttle`): past the limit the dashboard answers
429 with Retry-After to every attempt of that address or user, whatever it sends, instead
of checking it, so a guessing client can neither try many passwords nor keep the hashing
threads busy for everyone else, nor tell a right password from a wrong one meanwhile."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

#: Checks (in flight or failed) one client address may have in a window: passwords and tokens.
PER_ADDRESS = 10
#: Checks (in flight or failed) one user name may have in a window.
PER_USER = 5
#: The window, seconds.
WINDOW_S = 60.0
#: Most keys remembered (the oldest are forgotten first): a bound on memory.
MAX_KEYS = 10_000


class Throttle:
    """Password checks per key (``addr:`` + address, ``user:`` + name): each check is
    counted when it starts and uncounted when it succeeds, so what remains in the window
    are the failed ones and those still running. Not thread-safe: the event loop calls it."""

    def __init__(self, per_address: int = PER_ADDRESS, per_user: int = PER_USER, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"addr": per_address, "user": per_user}
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    @staticmethod
    def keys(address: str, user: str | None) -> tuple[str, ...]:
        """The keys of a check from ``address`` for ``user`` (cut to 100 characters; None,
        as for a bearer token: the address only)."""
        return (f"addr:{address[:100]}",) if user is None else (f"addr:{address[:100]}", f"user:{user[:100]}")

    def retry_after(self, keys: Sequence[str]) -> float:
        """Seconds until one of ``keys`` may be checked again; 0 when each may be now."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            times = self._prune(key, now)
            if times is not None and len(times) >= self.limits[key.partition(":")[0]]:
                wait = max(wait, times[0] + self.window_s - now)
        return wait

    def begin(self, keys: Sequence[str]) -> None:
        """Count a check of ``keys`` starting now."""
        now = self.clock()
        for key in keys:
            times = self._seen.pop(key, None) or deque()
            times.append(now)
            self._seen[key] = times  # newest last: the oldest keys are dropped first
        while len(self._seen) > MAX_KEYS:
            del self._seen[next(iter(self._seen))]

    def succeeded(self, keys: Sequence[str]) -> None:
        """Uncount the newest check of ``keys``: it succeeded."""
        for key in keys:
            times = self._seen.get(key)
            if times:
                times.pop()

    def _prune(self, key: str, now: float) -> deque[float] | None:
        times = self._seen.get(key)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times
