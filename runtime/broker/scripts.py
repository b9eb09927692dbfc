"""The Lua scripts of the broker: each ``runtime/broker/lua/{name}.lua`` with the pieces of
``_lib.lua`` it uses pasted in, and the lib's generated pieces filled in from their Python
sources: the key builders (runtime.broker.keys.SHAPES), and the statuses, the transition
table and status sets (runtime.status)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import redis

from ..status import FINAL, RUNNING, Status, lua_moves, lua_set
from .keys import lua_builders

LUA = Path(__file__).parent / "lua"
#: every script of the broker (the lib is not one)
NAMES = ("enqueue", "claim", "finish", "reap", "control", "wait", "adopt", "extend", "idle", "register",
         "fire", "move", "land", "settle", "rehome")


@cache
def generated_lib() -> str:
    """``_lib.lua`` with its generated parts filled in."""
    fills = {
        "--@KEY_BUILDERS@--": lua_builders(),
        "--@STATUSES@--": lua_set(frozenset(Status)),
        "--@MOVES@--": lua_moves(),
        "--@FINAL@--": lua_set(FINAL),
        "--@RUNNING@--": lua_set(RUNNING),
    }
    text = (LUA / "_lib.lua").read_text(encoding="utf-8")
    for marker, value in fills.items():
        text = text.replace(marker, value)
    return text


@cache
def lib_pieces() -> tuple[str, dict[str, str]]:
    """The generated lib as (its head, always included; its pieces by name, in order)."""
    head, *rest = re.split(r"^--- (\w+)\n", generated_lib(), flags=re.M)
    return head, dict(zip(rest[::2], rest[1::2]))


def _names(text: str) -> set[str]:
    """The identifiers ``text`` uses outside its comments."""
    code = re.sub(r"--[^\n]*", "", text)
    return set(re.findall(r"[A-Za-z_]\w*", code))


@cache
def source(name: str) -> str:
    """The full text of script ``name``: the lib's head and the pieces the script uses
    (and those they use) pasted where it says ``--@LIB@--``."""
    text = (LUA / f"{name}.lua").read_text(encoding="utf-8")
    head, pieces = lib_pieces()
    wanted: set[str] = set()
    todo = _names(text) & set(pieces)
    while todo:
        piece = todo.pop()
        wanted.add(piece)
        todo |= (_names(pieces[piece]) & set(pieces)) - wanted
    lib = head + "".join(body for piece, body in pieces.items() if piece in wanted)
    return text.replace("--@LIB@--", lib)


def register(client: redis.Redis, name: str) -> Any:
    """Script ``name`` registered with ``client`` (redis-py's Script: EVALSHA, loading it
    when the server lacks it)."""
    return client.register_script(source(name))
