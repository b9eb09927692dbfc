"""Redis delivery: connections (the embedded server, a URL), key names, the Lua scripts
and the broker that runs them, and the registry of live workers."""

from .broker import RedisBroker
from .connection import MAX_BLOCK_S, connect, redis_url, transient
from .keys import Keys
from .orphans import release_unknown
from .replies import claimed_from

__all__ = ["MAX_BLOCK_S", "Keys", "RedisBroker", "claimed_from", "connect", "redis_url", "release_unknown", "transient"]
