"""Leak hunting in a REPL: run a task many times in this process and name what grows.

    >>> from diagnostics import hunt_leaks
    >>> report = hunt_leaks("tasks_example.work.leaky", {"kilobytes": 256})
    >>> print(report)

Each run goes through :func:`runtime.run_task` (the worker's middleware). Three tools look
at the heap, because each is blind where another sees:

- **objgraph** counts gc-tracked objects per type. CPython does not track containers of
  atomic values (a dict of ints and strs, bytes, str), so a leak made of those shows only
  through the lists or objects that hold them, and this is where the next tool comes in;
- **tracemalloc** names the allocation sites (file:line) whose live memory grew, whatever
  the type; it slows allocation and adds its own memory, so it runs in a separate phase
  after the RSS curve is taken;
- **guppy3** diffs the heap: the objects alive after the last run that were not alive
  after the first, by kind and size.

Then objgraph finds a reference chain from a module to a surviving object of the fastest
growing type: usually the global that holds the leak. The chain is written as a graphviz
``.dot`` file (and a PNG when graphviz's ``dot`` is installed).
"""

from __future__ import annotations

import gc
import linecache
import os
import shutil
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.process import rss_reader
from runtime.units import fmt_bytes

#: Types whose growth is noise from the hunt itself (frames, cells of the running code).
#: Modules whose objects are the hunt's own bookkeeping.
_OWN_MODULES = ("guppy", "objgraph", "diagnostics.leaks")
_IGNORED_TYPES = {"frame", "cell", "builtin_function_or_method", "traceback", "weakref"}


class LeakHuntError(Exception):
    """The task could not be hunted: its first run did not succeed."""


@dataclass
class TypeGrowth:
    """Objects of one type alive after the last run minus after the first (objgraph)."""

    type: str
    count: int
    per_run: float


@dataclass
class SiteGrowth:
    """Live memory allocated at one source line that grew over the traced runs (tracemalloc)."""

    file: str
    line: int
    bytes: int
    blocks: int
    per_run_bytes: float
    source: str = ""

    @property
    def where(self) -> str:
        return f"{_short(self.file)}:{self.line}"


@dataclass
class LeakReport:
    """What :func:`hunt_leaks` found. Sizes in bytes; ``rss`` is the RSS after each run of
    the measured phase (warm-up runs excluded); ``chain`` describes the reference chain,
    module first; ``chain_file``/``chain_png`` are where it was drawn (None if not)."""

    path: str
    runs: int
    traced_runs: int
    rss: list[int] = field(default_factory=list)
    types: list[TypeGrowth] = field(default_factory=list)
    sites: list[SiteGrowth] = field(default_factory=list)
    heap_diff: str = ""
    heap_diff_bytes: int = 0
    heap_diff_count: int = 0
    chain: list[str] = field(default_factory=list)
    chain_type: str | None = None
    chain_file: str | None = None
    chain_png: str | None = None
    failures: int = 0

    @property
    def rss_growth_per_run(self) -> float:
        """Bytes of RSS gained per run, from the first to the last measured run."""
        return (self.rss[-1] - self.rss[0]) / max(1, len(self.rss) - 1) if len(self.rss) > 1 else 0.0

    @property
    def leaking_type(self) -> str | None:
        """The gc-tracked type that grew the most objects per run, if any grew in most runs."""
        return self.types[0].type if self.types else None

    @property
    def leaking_site(self) -> SiteGrowth | None:
        """The allocation site whose live memory grew the most."""
        return self.sites[0] if self.sites else None

    def __str__(self) -> str:
        out = [f"Leak hunt: {self.path}, {self.runs} runs measured"
               + (f" ({self.failures} failed)" if self.failures else "")]
        if self.rss:
            out.append(f"RSS: {fmt_bytes(self.rss[0])} -> {fmt_bytes(self.rss[-1])} "
                       f"({fmt_bytes(self.rss_growth_per_run)} per run)")
            out.append("  curve (MiB): " + " ".join(f"{r / 2**20:.1f}" for r in _sample(self.rss, 12)))
        out.append("Object types that grew (objgraph; gc-tracked objects only):")
        out += [f"  {t.type:<24} {t.count:+,d}  ({t.per_run:+.1f} per run)" for t in self.types[:8]] or ["  none"]
        out.append(f"Allocation sites that grew (tracemalloc, over {self.traced_runs} runs):")
        top = self.sites[0].bytes if self.sites else 0
        shown = [s for s in self.sites[:8] if s.bytes * 100 >= top]
        for s in shown:
            out.append(f"  {s.where:<40} {fmt_bytes(s.bytes):>10} in {s.blocks:+,d} blocks "
                       f"({fmt_bytes(s.per_run_bytes)} per run)")
            if s.source:
                out.append(f"      {s.source}")
        if not self.sites:
            out.append("  none")
        elif len(shown) < len(self.sites):
            out.append(f"  (+{len(self.sites) - len(shown)} sites under 1% of the top one: a block or so per run, "
                       "often CPython's free lists handing memory first allocated there to the leak)")
        out.append(f"Heap diff (guppy3): {self.heap_diff_count:,d} objects, {fmt_bytes(self.heap_diff_bytes)} "
                   "alive after the last run that were not after the first:")
        out += ["  " + line for line in self.heap_diff.splitlines()[:12]]
        if self.chain:
            out.append(f"Reference chain to a surviving {self.chain_type} (module first):")
            out += [f"  {'-> ' if i else ''}{step}" for i, step in enumerate(self.chain)]
            drawn = self.chain_png or self.chain_file
            if drawn:
                out.append(f"  drawn in {drawn}" + ("" if self.chain_png else " (install graphviz for a PNG)"))
        elif self.chain_type:
            out.append(f"No module holds a surviving {self.chain_type} (within 20 references).")
        return "\n".join(out)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython shows the text
        p.text(str(self))


def hunt_leaks(path: str, params: Mapping[str, Any] | None = None, *, runs: int = 20, warmup: int = 2,
               traced_runs: int = 10, chain_file: str | None = "leak-chain.dot",
               settings: Any = None) -> LeakReport:
    """Run task ``path`` with ``params`` ``warmup + runs + traced_runs`` times in this process
    and report what grew (see the module docstring).

    ``runs``: measured runs for the RSS curve, objgraph and guppy3 (at least 2);
    ``traced_runs``: further runs under tracemalloc (0 = skip); ``chain_file``: where the
    reference chain is drawn (``.dot``; a ``.png`` beside it when graphviz is installed;
    None = not drawn). Params are checked like at enqueue (raises InvalidParams). Raises
    LeakHuntError when the first run does not succeed (an unknown path, bad params, a task
    that raises); a later run that fails is counted in ``failures`` and the hunt goes on.
    Takes seconds: guppy3 walks the whole heap twice.
    """
    import objgraph
    from guppy import hpy

    from runtime.local import run_task

    if runs < 2:
        raise ValueError("runs must be >= 2")
    report = LeakReport(path, runs, traced_runs)
    rss = rss_reader()  # None: no RSS curve here (said once)

    def run() -> None:
        res = run_task(path, params, settings)
        if not res.ok:
            report.failures += 1
        del res

    first = run_task(path, params, settings)  # a task that cannot run has nothing to hunt
    if not first.ok:
        raise LeakHuntError(f"{path} did not succeed in its first run (status {first.status.value}"
                            f"{', ' + first.reason if first.reason else ''}): {first.exception!r}") from first.exception
    del first
    for _ in range(max(0, warmup - 1)):
        run()
    # the tools' own bookkeeping is made first, so that it does not count as growth
    hp = hpy()
    objgraph.get_new_ids(skip_update=False, limit=0, shortnames=False)  # mark what exists now
    hp.setrelheap()  # the heap diff counts objects alive from here on
    before_types = _typestats(objgraph)
    for _ in range(runs):
        run()
        gc.collect()
        if rss is not None and (n := rss.read()) is not None:
            report.rss.append(n)
    after_types = _typestats(objgraph)
    heap = hp.heap()
    report.heap_diff_bytes, report.heap_diff_count = heap.size, heap.count
    report.heap_diff = str(heap)
    del heap, hp
    new_ids = objgraph.get_new_ids(limit=0, shortnames=False)  # ids of objects made since the mark
    report.types = _grown_types(before_types, after_types, runs)
    if report.types:
        _find_holder(report, objgraph, new_ids, chain_file)
    del new_ids
    if traced_runs > 0:
        report.sites = _traced_sites(run, traced_runs)
    return report


def _grown_types(before: dict[str, int], after: dict[str, int], runs: int) -> list[TypeGrowth]:
    """The types with more objects after the runs, in most of them, most grown first."""
    out = []
    for name, n in after.items():
        grown = n - before.get(name, 0)
        if grown >= runs // 2 and name.rsplit(".", 1)[-1] not in _IGNORED_TYPES:
            out.append(TypeGrowth(name, grown, grown / runs))
    return sorted(out, key=lambda t: -t.count)


def _find_holder(report: LeakReport, objgraph: Any, new_ids: dict[str, set[int]], chain_file: str | None) -> None:
    """Fill the report's reference chain to a survivor of the fastest growing type (drawn
    in ``chain_file`` when given)."""
    report.chain_type = report.types[0].type
    chain = _chain_to_module(objgraph, new_ids, report.chain_type)
    if chain:
        report.chain = _describe_chain(chain)
        if chain_file:
            report.chain_file, report.chain_png = _draw(objgraph, chain, chain_file)


def _typestats(objgraph: Any) -> dict[str, int]:
    gc.collect()
    return dict(objgraph.typestats(shortnames=False))


def _chain_to_module(objgraph: Any, new_ids: dict[str, set[int]], type_name: str, tries: int = 10) -> list[Any]:
    """A reference chain from a module to a new object of ``type_name`` that is still
    alive ([] if none of ``tries`` such objects is reachable from a module)."""
    wanted = new_ids.get(type_name) or set()
    alive = [o for o in gc.get_objects() if id(o) in wanted]
    found = 0
    for obj in alive[::-1][:200]:  # the newest first: gc lists objects roughly by age
        chain = objgraph.find_backref_chain(obj, objgraph.is_proper_module, max_depth=20)
        if chain and objgraph.is_proper_module(chain[0]):
            if not chain[0].__name__.startswith(_OWN_MODULES):
                return list(chain)
            continue  # made by the hunt's own tools
        found += 1
        if found >= tries:
            break
    return []


def _describe_chain(chain: list[Any]) -> list[str]:
    """``[module, dict, list, obj]`` as readable steps: what holds what, under which key."""
    steps = [f"module {chain[0].__name__}"]
    for holder, held in zip(chain, chain[1:]):
        how = ""
        if isinstance(holder, dict):
            key = next((k for k, v in holder.items() if v is held), None)
            how = f"[{key!r}]" if key is not None else ""
        elif isinstance(holder, (list, tuple)):
            idx = next((i for i, v in enumerate(holder) if v is held), None)
            how = f"[{idx}]" if idx is not None else ""
        elif hasattr(holder, "__dict__") and getattr(holder, "__dict__", None) is held:
            how = ".__dict__"
        desc = f"{type(held).__module__}.{type(held).__qualname__}".removeprefix("builtins.")
        size = f" of {len(held):,d} items" if isinstance(held, (list, dict, set, tuple)) else ""
        steps.append(f"{how} {desc}{size}".strip())
    return steps


def _draw(objgraph: Any, chain: list[Any], dot_file: str) -> tuple[str, str | None]:
    """Write the chain as ``dot_file`` (.dot) and, with graphviz installed, a PNG beside it."""
    import contextlib
    import io
    dot_file = os.path.abspath(dot_file)
    png = None
    with contextlib.redirect_stdout(io.StringIO()):  # objgraph prints where it wrote
        objgraph.show_chain(chain, filename=dot_file)
        if shutil.which("dot"):
            png = os.path.splitext(dot_file)[0] + ".png"
            objgraph.show_chain(chain, filename=png)
    return dot_file, png


def _traced_sites(run: Any, n: int) -> list[SiteGrowth]:
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start(1)
    try:
        run()  # the first traced run fills caches that tracing itself adds
        gc.collect()
        before = tracemalloc.take_snapshot()
        for _ in range(n):
            run()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        if started_here:
            tracemalloc.stop()
    skip = [tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
            tracemalloc.Filter(False, __file__)]
    stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
    out = []
    for s in stats:
        if s.size_diff <= 0 or s.count_diff < n / 2:  # a leak leaves something behind most runs
            continue
        frame = s.traceback[0]
        out.append(SiteGrowth(frame.filename, frame.lineno, s.size_diff, s.count_diff, s.size_diff / n,
                              linecache.getline(frame.filename, frame.lineno).strip()))
        if len(out) == 10:
            break
    return out


def _short(filename: str) -> str:
    """A path shortened to what follows site-packages or the current folder."""
    for marker in ("site-packages" + os.sep, os.getcwd() + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    parts = filename.split(os.sep)
    return os.sep.join(parts[-2:])


def _sample(values: list[int], k: int) -> list[int]:
    if len(values) <= k:
        return values
    step = (len(values) - 1) / (k - 1)
    return [values[round(i * step)] for i in range(k)]
