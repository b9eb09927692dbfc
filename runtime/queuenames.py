"""What a queue name may be: letters, digits, ``_``, ``-`` and ``.``, up to
:data:`MAX_LEN` characters, not only dots. A name is part of Redis keys, URLs of the
dashboard and lines of the CLI, so nothing in it needs escaping anywhere."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

MAX_LEN = 100
_NAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_LEN}}}")


def queue_name_problem(name: object) -> str | None:
    """Why ``name`` is not a queue name, in one line (``queue name 'a/b' ...``); None when it is one."""
    if isinstance(name, str) and _NAME.fullmatch(name) and name.strip("."):
        return None
    shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60]) + "..."
    return (f"queue name {shown} is not one: give letters, digits, '_', '-' and '.' "
            f"(up to {MAX_LEN}, not only dots)")


def queue_names_problem(names: Iterable[object]) -> str | None:
    """What is wrong with the first bad name of ``names`` (or with none given); None when all are names."""
    names = list(names)
    return next(filter(None, map(queue_name_problem, names)), None) if names else "give at least one queue"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'default'?)`` when a known name is close to ``name``, else ""."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def prefix_problem(prefix: object) -> str | None:
    """Why ``prefix`` cannot prefix runtime's Redis keys, in one line; None when it can.
    Every key of a queue carries the queue's name in braces, a Redis Cluster hash tag, and
    Redis hashes the text between a key's first ``{`` and the first ``}`` after it. So a
    ``{`` in the prefix must close inside it (``{rt1}``: every key of the deployment in
    that one slot); an unclosed one would make the tag of each key run into the key's own
    name, spreading a queue's keys over slots (CROSSSLOT on a cluster)."""
    if not isinstance(prefix, str) or not prefix:
        return f"key_prefix must be a non-empty string, got {prefix!r}"
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) in (-1, start + 1):  # unclosed, or '{}' (no tag)
        return (f"key_prefix {prefix!r}: a '{{' in it must close in it with a name between "
                "('{rt1}': the whole deployment in one Redis Cluster slot); or leave braces out")
    return None
