"""Job stores: the contract (base), Redis (the live documents) and MongoDB (the history)."""

from .base import JobStore
from .redis_store import RedisJobStore

__all__ = ["JobStore", "RedisJobStore"]
