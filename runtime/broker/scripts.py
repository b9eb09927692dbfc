"""The Lua scripts of the broker: each ``runtime/broker/lua/{name}.lua`` with ``_lib.lua``
pasted in, and the lib's generated parts filled in from their Python sources: the key
builders (runtime.broker.keys.SHAPES), the place of each status in the status-index block
(runtime.broker.keys.STATUS_ORDER), and the transition table and status sets
(runtime.status)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import redis

from ..status import FINAL, RUNNING, lua_moves, lua_set
from .keys import STATUS_ORDER, lua_builders

LUA = Path(__file__).parent / "lua"
#: every script of the broker (the lib is not one)
NAMES = ("enqueue", "claim", "finish", "reap", "control", "wait", "adopt")


@cache
def generated_lib() -> str:
    """``_lib.lua`` with its generated parts filled in."""
    fills = {
        "--@KEY_BUILDERS@--": lua_builders(),
        "--@STATUS_POS@--": ", ".join(f"['{s.value}'] = {i + 1}" for i, s in enumerate(STATUS_ORDER)),
        "--@MOVES@--": lua_moves(),
        "--@FINAL@--": lua_set(FINAL),
        "--@RUNNING@--": lua_set(RUNNING),
    }
    text = (LUA / "_lib.lua").read_text()
    for marker, value in fills.items():
        text = text.replace(marker, value)
    return text


@cache
def source(name: str) -> str:
    """The full text of script ``name``, lib included."""
    return (LUA / f"{name}.lua").read_text().replace("--@LIB@--", generated_lib())


def register(client: redis.Redis, name: str) -> Any:
    """Script ``name`` registered with ``client`` (redis-py's Script: EVALSHA, loading it
    when the server lacks it)."""
    return client.register_script(source(name))
