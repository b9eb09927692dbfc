"""Exponential backoff: the one helper every retry loop of runtime uses."""

from __future__ import annotations


class Backoff:
    """Delays that double from ``start_s`` up to ``max_s`` (seconds): ``next()`` returns the
    delay to wait now and doubles the following one; ``reset()`` after a success."""

    def __init__(self, start_s: float = 0.1, max_s: float = 5.0, factor: float = 2.0) -> None:
        self.start_s, self.max_s, self.factor = start_s, max_s, factor
        self.delay_s = start_s

    def next(self) -> float:
        delay = self.delay_s
        self.delay_s = min(self.delay_s * self.factor, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.start_s

    @property
    def at_max(self) -> bool:
        """Has the delay reached ``max_s``?"""
        return self.delay_s >= self.max_s
