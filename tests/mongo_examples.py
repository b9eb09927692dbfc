"""The example queries of docs/mongodb.md: read from the page, run against a collection
with their shapes recorded, and the declared index (runtime.store.mongo.documents.INDEXES)
each shape uses. Shared by tests/store/test_mongo_examples.py and bench/mongo_queries.py.

The shape rule is MongoDB's for a single index: the index's first keys are equality
fields of the filter, followed by at most one range or sort field; the index that covers
most of the query wins, ties going to the one declared first. ``_id`` equality uses
``_id_``. An aggregation is judged by its first ``$match`` (and a ``$sort`` right after).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.store.mongo.documents import INDEXES

PAGE = Path(__file__).resolve().parent.parent / "docs" / "mongodb.md"
_RANGE = {"$gt", "$gte", "$lt", "$lte"}


@dataclass
class Example:
    number: int
    title: str
    index: str
    code: str
    name: str  # the variable the example assigns its answer to


@dataclass
class Shape:
    """What a query asked of the collection."""

    filter: dict[str, Any]
    sort: list[tuple[str, int]] = field(default_factory=list)


def setup_code() -> str:
    """The page's setup block (imports, ``jobs``, ``now``, ids)."""
    return re.search(r"```python\n(from datetime.*?)```", PAGE.read_text(), re.S).group(1)  # type: ignore[union-attr]


def examples() -> list[Example]:
    """The numbered examples of the page, in order."""
    out = []
    for m in re.finditer(r"^### (\d+)\. (.+?)\n\nIndex: `(\w+)`.*?\n\n```python\n(.*?)```", PAGE.read_text(), re.S | re.M):
        code = m.group(4)
        out.append(Example(int(m.group(1)), m.group(2), m.group(3), code, re.match(r"(\w+) =", code).group(1)))  # type: ignore[union-attr]
    return out


class _Cursor:
    def __init__(self, cursor: Any, shape: Shape) -> None:
        self._cursor, self._shape = cursor, shape

    def sort(self, key: Any, direction: int = 1) -> _Cursor:
        self._shape.sort = [(key, direction)] if isinstance(key, str) else list(key)
        self._cursor = self._cursor.sort(key, direction) if isinstance(key, str) else self._cursor.sort(key)
        return self

    def limit(self, n: int) -> _Cursor:
        self._cursor = self._cursor.limit(n)
        return self

    def __iter__(self) -> Any:
        return iter(self._cursor)


class Recording:
    """A collection that records the shape of each query made through it."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.shapes: list[Shape] = []

    def find(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> _Cursor:
        self.shapes.append(shape := Shape(filter))
        return _Cursor(self.collection.find(filter, *args, **kwargs), shape)

    def find_one(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.shapes.append(Shape(filter))
        return self.collection.find_one(filter, *args, **kwargs)

    def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> Any:
        match = pipeline[0].get("$match", {}) if pipeline else {}
        sort = list(pipeline[1]["$sort"].items()) if match and len(pipeline) > 1 and "$sort" in pipeline[1] else []
        self.shapes.append(Shape(match, sort))
        return self.collection.aggregate(pipeline, **kwargs)


def run(example: Example, collection: Any, names: dict[str, Any]) -> tuple[Any, list[Shape]]:
    """Run ``example`` on ``collection`` with ``names`` (``now``, ``job_id``, ``worker_id``)
    defined; returns its answer and the shapes of its queries."""
    rec = Recording(collection)
    scope = {**names, "jobs": rec}
    exec(compile("from datetime import datetime, timedelta, timezone\n" + example.code, f"example {example.number}",
                 "exec"), scope)
    return scope[example.name], rec.shapes


def index_for(shape: Shape) -> str | None:
    """The declared index ``shape`` uses (see the module docstring), or None."""
    eq = {k for k, v in shape.filter.items() if not k.startswith("$") and not _is_operator(v)}
    eq |= {k for k, v in shape.filter.items() if _is_operator(v) and set(v) <= {"$eq", "$in"}}
    rng = {k for k, v in shape.filter.items() if _is_operator(v) and set(v) & _RANGE}
    if "_id" in eq:
        return "_id_"
    sort_key = shape.sort[0][0] if shape.sort else None
    best, best_score = None, 0
    for name, (keys, _) in INDEXES.items():
        score = 0
        for key, _direction in keys:
            if key in eq:
                score += 1
                continue
            if key in rng or key == sort_key:
                score += 1
            break
        if score > best_score:
            best, best_score = name, score
    return best


def _is_operator(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(str(k).startswith("$") for k in value)


def explain_uses_an_index(collection: Any, shape: Shape) -> bool | None:
    """On a real MongoDB: does the winning plan of ``shape`` scan an index? None where the
    server's explain has no query planner (mongoeco's)."""
    cursor = collection.find(shape.filter)
    if shape.sort:
        cursor = cursor.sort(shape.sort)
    plan = cursor.explain()
    if "queryPlanner" not in plan:
        return None
    text = str(plan["queryPlanner"].get("winningPlan"))
    return "COLLSCAN" not in text and any(s in text for s in ("IXSCAN", "IDHACK", "EXPRESS", "COUNT_SCAN"))
