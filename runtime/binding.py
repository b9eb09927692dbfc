"""Params against a function task's signature: what is wrong, said in one line.

A function task takes its params as keyword arguments. :func:`params_problem` names every
unknown param (with the closest accepted name: ``'widht'`` -> ``'width'``) and every
missing required one, so a misspelling is not reported only as the parameter it left
missing. Used by the worker when params do not bind (status failed, reason bad-params)
and by producers at enqueue (runtime.client.check).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def keywords(sig: inspect.Signature | None) -> tuple[frozenset[str], frozenset[str]] | None:
    """(names accepted, names required) when every parameter of ``sig`` may be passed by
    keyword and none is ``*args``/``**kwargs`` (then params bind exactly when their keys
    are within the first and cover the second); None otherwise."""
    if sig is None or any(p.kind not in _KEYWORD for p in sig.parameters.values()):
        return None
    return (frozenset(sig.parameters),
            frozenset(n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty))


def plain(sig: inspect.Signature) -> str:
    """``sig`` without annotations, as params are named: ``(path, width=3)``."""
    empty = inspect.Parameter.empty
    return str(sig.replace(parameters=[p.replace(annotation=empty) for p in sig.parameters.values()],
                           return_annotation=empty))


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def params_problem(path: str, sig: inspect.Signature, params: Mapping[str, Any]) -> str | None:
    """Why ``params`` do not bind to ``sig`` (the task at ``path``), in one line; None when
    they bind. Example: ``params do not match mod.resize(path, width): unknown param
    'widht' (did you mean 'width'?); missing required param 'path'``."""
    ps = sig.parameters.values()
    accepted = {p.name for p in ps if p.kind in _KEYWORD}
    any_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in ps)
    required = [p.name for p in ps if p.kind in _KEYWORD and p.default is inspect.Parameter.empty]
    positional = [p.name for p in ps if p.kind == inspect.Parameter.POSITIONAL_ONLY
                  and p.default is inspect.Parameter.empty]
    given = set(params)
    problems = []
    if not any_keyword:
        unknown = sorted(given - accepted)
        # a misspelling is most likely one of the names not given yet
        free = (accepted - given) or accepted
        if unknown:
            problems.append(f"unknown param{'s' if len(unknown) > 1 else ''} "
                            + ", ".join(f"{u!r}{_did_you_mean(u, free)}" for u in unknown))
    missing = [n for n in required if n not in given]
    if missing:
        problems.append(f"missing required param{'s' if len(missing) > 1 else ''} "
                        + ", ".join(repr(n) for n in missing))
    if positional:
        problems.append(f"positional-only parameter{'s' if len(positional) > 1 else ''} "
                        + ", ".join(repr(n) for n in positional) + " cannot be given as params")
    if not problems:
        try:
            sig.bind(**params)
        except TypeError as exc:
            problems.append(str(exc))
    return f"params do not match {path}{plain(sig)}: {'; '.join(problems)}" if problems else None
