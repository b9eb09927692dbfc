"""Typed, frozen settings, loaded once: defaults < ``runtime.toml`` < ``RUNTIME_*`` env < CLI.

Every field has its unit in its name. :func:`load_settings` validates and raises
:class:`~runtime.errors.ConfigError` with the offending source and field; it opens no
connection and starts nothing (no side effects).

Env names are ``RUNTIME_`` + the field name in upper case (``RUNTIME_REDIS_URL``,
``RUNTIME_GREENLETS``); lists are comma-separated (``RUNTIME_QUEUES=high,default``); the
per-status TTLs are ``RUNTIME_TTL_S=success:3600,failed:604800``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configfile import read_config
from .defaults import DAY_S, DEFAULT_MONGODB_TTL_S, DEFAULT_TTL_S, MAX_PROCESSES, TRACE_LINKS
from .errors import ConfigError
from .queuenames import prefix_problem, queue_names_problem
from .redact import mask
from .status import FINAL
from .units import parse_bytes

__all__ = ["DAY_S", "DEFAULT_MONGODB_TTL_S", "DEFAULT_TTL_S", "MAX_PROCESSES", "TRACE_LINKS",
           "Settings", "load_settings", "project_root"]

@dataclass(frozen=True)
class Settings:
    """Everything a client, worker or CLI command needs to know. Units are in the names."""

    #: redis://, rediss:// or unix:// URL; None = the embedded server under ``embedded_dir``.
    redis_url: str | None = None
    #: Folder of the embedded redis-server (socket, pid file, data); relative to the folder
    #: of the runtime.toml that sets it, else to the cwd. None = the project's: ``.runtime``
    #: of the nearest folder, from the cwd up, holding ``.runtime/`` or ``runtime.toml``
    #: (as git finds ``.git``), else of the cwd (see :func:`project_root`).
    embedded_dir: str | None = None
    #: Prefix of every Redis key, so several apps (or tests) share one Redis.
    key_prefix: str = "rt"
    #: Queues a worker takes jobs from, first ones first.
    queues: tuple[str, ...] = ("default",)
    #: Jobs one worker process runs at once (gevent greenlets).
    greenlets: int = 25
    #: Module prefixes the worker may import tasks from; any other path fails the job.
    task_modules: tuple[str, ...] = ("tasks_example",)
    #: Timeout of a job whose task declares none, seconds.
    default_timeout_s: float = 300.0
    #: After the first SIGTERM/SIGINT, how long running jobs may go on before they are
    #: interrupted and requeued, seconds.
    grace_s: float = 30.0
    #: A claim not extended for this long is taken back (at-least-once), seconds. Set it
    #: alike on clients and workers: a job handed straight to an idle worker at enqueue
    #: is claimed with the enqueuing client's value.
    visibility_timeout_s: float = 60.0
    #: Period of the native heartbeat thread (registry, claim extension, aborts), seconds.
    heartbeat_interval_s: float = 1.0
    #: A worker whose registry entry is this old is dead; its jobs are requeued, seconds.
    worker_ttl_s: float = 5.0
    #: Period of the reaper that requeues the jobs of dead workers, seconds.
    reap_interval_s: float = 1.0
    #: A job whose worker died this many times while running it ends failed (worker-lost).
    max_lost: int = 3
    #: Each worker process has a watchdog process (runtime.watch) that the GIL cannot stop; 0 = none.
    watchdog: int = 1
    #: Enqueues, claims and outcomes wait for this many replicas (Redis WAIT; README: Sentinel).
    wait_replicas: int = 0
    #: A worker hands a job whose task it does not serve (outside its task_modules, or
    #: missing from its code: in a rolling deploy, old workers see the new tasks' jobs)
    #: back to its queue, after a delay growing from 1 s to 60 s, for a worker that serves
    #: it; after this long unserved the job ends failed (reason unserved), seconds. An
    #: hour: a deploy rolls out well within it, and a job no worker will ever serve (a
    #: typo queued with --no-check, a module nobody runs) still ends the same hour.
    unserved_timeout_s: float = 3600.0
    #: Most jobs claimed (and finished) in one Redis round trip.
    claim_batch: int = 100
    #: Jobs claimed ahead of free greenlets, started the moment one frees, so a short job
    #: does not wait a round trip for the next and the next batch is claimed while this one
    #: runs; -1 = as many as ``greenlets`` (Celery's default is 4x its concurrency,
    #: Dramatiq's 2x). Measured on a no-op drain with 100 greenlets: a quarter of them,
    #: 12,000 jobs/s; all of them, 17,500 (bench/throughput.py). They are claimed (status
    #: started) while they wait; a stop returns them to the queue.
    prefetch: int = -1
    #: Largest encoded params accepted at enqueue, and largest stored result, bytes.
    max_job_bytes: int = 1_048_576
    #: Seconds a job document is kept after each final status (see DEFAULT_TTL_S).
    ttl_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TTL_S))
    #: Period of progress writes to the store while a task calls set_progress, seconds.
    progress_interval_s: float = 0.5
    #: Middleware by dotted path, in order (before-hooks in this order, after-hooks reversed;
    #: a middleware that needs another's hooks first says so; Timing last: it times the task).
    middleware: tuple[str, ...] = ("runtime.scheduler.middleware.SchedulerMiddleware",
                                   "diagnostics.client_spans.ClientSpans", "diagnostics.tracing.Tracing",
                                   "diagnostics.metrics.Metrics",
                                   "diagnostics.memory.Memory", "diagnostics.memory.HeapDiff",
                                   "diagnostics.profiling.Profiling", "diagnostics.logs.Logs",
                                   "diagnostics.sentry.Sentry", "diagnostics.timing.Timing")
    #: Task paths to profile with pyinstrument: fnmatch patterns, comma-separated ("*" = all).
    profile: str = ""
    #: Task paths whose jobs get a heap diff (tracemalloc) and run alone: patterns as above.
    trace_memory: str = ""
    #: Sentry DSN for job errors (else SENTRY_DSN; none = no Sentry).
    sentry_dsn: str | None = None
    #: Also report attempts that will be retried (default: only final failures).
    sentry_report_retries: int = 0
    #: Send local variables of the failing frames to Sentry (they may hold personal data).
    sentry_include_locals: int = 0
    #: Send the job's params to Sentry (its ``job`` context), the values of secret-looking
    #: keys (password, token, key...) masked; off by default: params may hold personal data.
    sentry_include_params: int = 0
    #: OTLP endpoint for traces (http://collector:4318, or its /v1/traces URL); None = the
    #: standard OTEL_EXPORTER_OTLP_* variables, and with none of them no tracing at all.
    otlp_endpoint: str | None = None
    #: Serve the job metrics for Prometheus at http://metrics_host:metrics_port/metrics
    #: (OpenTelemetry's Prometheus exporter; pip install 'runtime[prometheus]'); 0 = off.
    #: With processes > 1, one port per worker process: metrics_port + its slot (0 to
    #: processes - 1; a recycling process's replacement takes its slot and its port).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: Link to a trace shown by `runtime job`: a URL template with ``{trace_id}`` (other
    #: braces doubled), or a name of TRACE_LINKS ("jaeger", "tempo": the compose file's).
    trace_link: str | None = "jaeger"
    #: Name of a job's consumer span: "task" = ``process <task path>`` (tasks apart in
    #: Jaeger's operation list and in Tempo's span metrics); "queue" = ``process <queue>``,
    #: the messaging conventions' ``{operation} {destination}`` form.
    span_name: str = "task"
    #: Largest report stored with a job, bytes (cut with a marker beyond).
    max_report_bytes: int = 262_144
    #: Log lines kept per job, and their total size, bytes (a marker says what was dropped).
    max_log_lines: int = 1000
    max_log_bytes: int = 65_536
    # ---- MongoDB job store (runtime.store.mongo); none of it is used without a URL ----
    #: mongodb:// or mongodb+srv:// URL; with one, job documents are also written to MongoDB
    #: (the durable, queryable history) and read from there. None = Redis only.
    mongodb_url: str | None = None
    #: Database of the job collection; None = the one named in the URL, else "runtime".
    mongodb_database: str | None = None
    #: Collection of job documents (one document per job, _id = job id). It belongs to one
    #: deployment (one Redis database and key prefix; runtime.store.mongo.deployment).
    mongodb_collection: str = "jobs"
    #: 1: deployments with different key prefixes may share the collection, each setting
    #: it (their documents told apart by ``prefix``, which queries must then name); 0: a
    #: second deployment pointing at it is refused at start.
    mongodb_shared: int = 0
    #: Write concern of every job write: w ("1", "majority", a number) and journal (0/1).
    mongodb_w: str = "1"
    mongodb_journal: int = 0
    #: Connect, socket and write-concern timeout of MongoDB calls, seconds (how long one
    #: may run).
    mongodb_timeout_s: float = 5.0
    #: How long a call waits for a reachable MongoDB (server selection), seconds, at most
    #: ``mongodb_timeout_s``: an unreachable MongoDB fails a command (exit code 4) this
    #: fast, and workers stop claiming within it.
    mongodb_select_timeout_s: float = 2.0
    #: Seconds a MongoDB document is kept after each final status (its TTL index; see
    #: DEFAULT_MONGODB_TTL_S: months), independent of ``ttl_s`` (Redis); 0 = kept forever.
    mongodb_ttl_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MONGODB_TTL_S))
    #: Timeout of a producer's own copy (queue_job(s), cancel, abort, requeue), seconds:
    #: best effort (Redis holds the job, the sweep copies what is missing), so short.
    mongodb_producer_timeout_s: float = 0.5
    #: After a producer's copy failed, its copies skip MongoDB for this long, seconds
    #: (a circuit breaker: an outage costs one short timeout, not one per call).
    mongodb_breaker_s: float = 10.0
    #: Largest job document written, bytes (MongoDB refuses over 16 MiB): beyond, the
    #: largest fields (profile, report, logs, result, traceback) are cut with a marker.
    mongodb_max_doc_bytes: int = 4_194_304
    #: Period of the reconcile sweep that workers' reapers run (one worker at a time), seconds.
    mongodb_sweep_interval_s: float = 10.0
    #: The sweep leaves changes younger than this to their own writers, seconds.
    mongodb_sweep_lag_s: float = 5.0
    #: OpenTelemetry child spans for every pymongo and redis call (needs the extra
    #: ``otel-clients``: opentelemetry-instrumentation-pymongo/-redis, and the middleware
    #: diagnostics.client_spans.ClientSpans, in the default list), 0/1; off by default.
    trace_clients: int = 0
    #: Worker processes run under one supervisor that restarts them (0 = one process, not
    #: supervised unless a limit below asks for recycling, which runs one supervised process).
    processes: int = 0
    #: Soft memory limit of each worker process (RSS), bytes; settings and flags take units
    #: K, M, G (powers of 1024). Checked after every job and every ``mem_check_interval_s``;
    #: over it, free heap is returned to the system (malloc_trim) and, still over, the worker
    #: recycles: it stops claiming, lets running jobs finish within ``grace_s`` and exits,
    #: and the supervisor starts a fresh one. None = no limit.
    mem_limit_bytes: int | None = None
    #: Hard memory ceiling, enforced from outside by the supervisor: a worker above it is
    #: killed and its running jobs requeued at once (worker-lost). None = the soft limit
    #: plus HARD_LIMIT_MARGIN (a quarter of it, at least 64 MiB).
    mem_hard_limit_bytes: int | None = None
    #: Period of the memory check by a native thread (besides the check after every job) and
    #: of the supervisor's check of the hard limit, seconds.
    mem_check_interval_s: float = 0.25
    #: Recycle a worker process after this many jobs (0 = never).
    max_jobs: int = 0
    #: Recycle a worker process after this many seconds (0 = never).
    max_time_s: float = 0.0

    @property
    def embedded_path(self) -> Path:
        """The folder of the embedded server: ``embedded_dir``, else the project's."""
        if self.embedded_dir:
            return Path(self.embedded_dir).absolute()
        return (project_root() or Path.cwd()) / EMBEDDED_DIR

    @property
    def hard_limit_bytes(self) -> int | None:
        """The hard memory ceiling in bytes: ``mem_hard_limit_bytes``, else the soft limit
        plus a quarter of it (at least 64 MiB); None without a soft limit."""
        if self.mem_hard_limit_bytes is not None:
            return self.mem_hard_limit_bytes
        if self.mem_limit_bytes is None:
            return None
        return self.mem_limit_bytes + max(self.mem_limit_bytes // 4, 64 * 2**20)

    @property
    def supervised(self) -> bool:
        """Does ``runtime worker`` run a supervisor (processes, or a recycling limit)?"""
        return bool(self.processes or self.mem_limit_bytes or self.mem_hard_limit_bytes
                    or self.max_jobs or self.max_time_s)

    def __post_init__(self) -> None:
        if self.greenlets < 1 or self.prefetch < -1:
            raise ConfigError(f"greenlets must be >= 1 and prefetch >= 0 (-1: as many as greenlets), "
                              f"got {self.greenlets} and {self.prefetch}")
        queues = queue_names_problem(self.queues)
        if problem := (queues and f"queues: {queues}") or prefix_problem(self.key_prefix):
            raise ConfigError(problem)
        if self.claim_batch < 1 or self.max_lost < 1:
            raise ConfigError(f"claim_batch and max_lost must be >= 1, got {self.claim_batch} and {self.max_lost}")
        for name in ("grace_s", "visibility_timeout_s", "heartbeat_interval_s", "worker_ttl_s",
                     "reap_interval_s", "default_timeout_s", "unserved_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.worker_ttl_s <= self.heartbeat_interval_s:
            raise ConfigError("worker_ttl_s must be longer than heartbeat_interval_s")
        if not 0 <= self.processes <= MAX_PROCESSES:
            raise ConfigError(f"processes must be between 0 and {MAX_PROCESSES}, got {self.processes}")
        if self.max_jobs < 0 or self.wait_replicas < 0 or not 0 <= self.max_time_s < float("inf"):
            raise ConfigError(f"max_jobs, wait_replicas and max_time_s must be >= 0 (and finite), "
                              f"got {self.max_jobs}, {self.wait_replicas} and {self.max_time_s}")
        if self.mem_check_interval_s <= 0:
            raise ConfigError(f"mem_check_interval_s must be > 0, got {self.mem_check_interval_s}")
        for name in ("mem_limit_bytes", "mem_hard_limit_bytes"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"{name} must be > 0, got {v}")
        if (self.mem_hard_limit_bytes is not None and self.mem_limit_bytes is not None
                and self.mem_hard_limit_bytes <= self.mem_limit_bytes):
            raise ConfigError(f"the hard memory limit ({self.mem_hard_limit_bytes / 2**20:.1f} MiB) must be above "
                              f"the soft one, mem_limit_bytes ({self.mem_limit_bytes / 2**20:.1f} MiB)")
        self._check_mongodb()
        unknown = set(self.ttl_s) - {s.value for s in FINAL}
        if unknown:
            raise ConfigError(f"ttl_s names statuses that are not final: {sorted(unknown)}")
        ttl = {**DEFAULT_TTL_S, **{k: float(v) for k, v in self.ttl_s.items()}}
        if any(not 0 <= v < float("inf") for v in ttl.values()):
            raise ConfigError(f"ttl_s must be >= 0 seconds (0 = not kept), got {ttl}")
        object.__setattr__(self, "ttl_s", ttl)
        unknown = set(self.mongodb_ttl_s) - {s.value for s in FINAL}
        if unknown:
            raise ConfigError(f"mongodb_ttl_s names statuses that are not final: {sorted(unknown)}")
        mttl = dict(DEFAULT_MONGODB_TTL_S)
        mttl.update({k: float(v) for k, v in self.mongodb_ttl_s.items()})
        if any(not 0 <= v < float("inf") for v in mttl.values()):
            raise ConfigError(f"mongodb_ttl_s must be >= 0 seconds (0 = kept forever), got {mttl}")
        object.__setattr__(self, "mongodb_ttl_s", mttl)
        self._check_tracing()

    def _check_tracing(self) -> None:
        if not 0 <= self.metrics_port <= 65535 - max(0, self.processes):
            raise ConfigError(f"metrics_port must be a port (0 = off) with room for one per worker process "
                              f"({self.processes}), got {self.metrics_port}")
        if self.trace_link in TRACE_LINKS:
            object.__setattr__(self, "trace_link", TRACE_LINKS[self.trace_link])
        if self.span_name not in ("task", "queue"):
            raise ConfigError(f"span_name must be task or queue, got {self.span_name!r}")
        if self.trace_link:
            check_trace_link(self.trace_link)

    def _check_mongodb(self) -> None:
        """Raise ConfigError for a bad MongoDB setting (mongodb_ttl_s aside)."""
        if self.mongodb_url and not self.mongodb_url.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError("mongodb_url must start with mongodb:// or mongodb+srv://, "
                              f"got {mask(self.mongodb_url)!r}")
        if min(self.mongodb_timeout_s, self.mongodb_select_timeout_s, self.mongodb_sweep_interval_s) <= 0 \
                or self.mongodb_sweep_lag_s < 0:
            raise ConfigError("mongodb_timeout_s, mongodb_select_timeout_s and mongodb_sweep_interval_s must be > 0, "
                              "mongodb_sweep_lag_s >= 0")
        if not isinstance(self.mongodb_collection, str) or not self.mongodb_collection.strip() or any(
                c in self.mongodb_collection for c in "$\x00"):
            raise ConfigError(f"mongodb_collection must be a collection name (not empty, without '$' or NUL), "
                              f"got {self.mongodb_collection!r}")
        if not ((self.mongodb_w.isdigit() and int(self.mongodb_w) >= 1) or self.mongodb_w == "majority"):
            # w=0 is unacknowledged: the version fence of job writes needs their replies
            raise ConfigError(f"mongodb_w must be a number >= 1 or 'majority', got {self.mongodb_w!r}")
        if self.mongodb_producer_timeout_s <= 0 or self.mongodb_breaker_s < 0:
            raise ConfigError("mongodb_producer_timeout_s must be > 0, mongodb_breaker_s >= 0")
        if not 65_536 <= self.mongodb_max_doc_bytes <= 15 * 2**20:
            raise ConfigError(f"mongodb_max_doc_bytes must be within [65536, 15 MiB], got {self.mongodb_max_doc_bytes}")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated again."""
        return dataclasses.replace(self, **changes)


def check_trace_link(link: str) -> None:
    """Raise ConfigError unless ``link`` is an http(s) URL template whose only field is
    ``{trace_id}`` (other braces doubled), or a name of TRACE_LINKS."""
    import string
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(link) if name is not None]
    except ValueError as exc:
        fields, error = [], str(exc)
    else:
        error = "" if fields and all(f == ("trace_id", "", None) for f in fields) else "no {trace_id}, or other fields"
    if error or not link.startswith(("http://", "https://")):
        raise ConfigError(f"trace_link must be an http(s) URL template with {{trace_id}} and any other brace doubled "
                          f"({{{{ }}}}), or one of {', '.join(TRACE_LINKS)}: {error or 'not a URL'} in {link!r}")


#: Name of the folder of a project's embedded server.
EMBEDDED_DIR = ".runtime"
#: Name of a project's settings file.
CONFIG_FILE = "runtime.toml"


def project_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder from ``start`` (the cwd) up to ``/`` that holds ``.runtime/`` or
    ``runtime.toml``: the project whose embedded server and settings every command in it
    and in its subfolders shares. None when there is none (a new project: the cwd)."""
    here = Path(start).absolute() if start is not None else Path.cwd()
    for folder in (here, *here.parents):
        if (folder / EMBEDDED_DIR).is_dir() or (folder / CONFIG_FILE).is_file():
            return folder
    return None


def _coerce(name: str, raw: Any, source: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(Settings)}[name]
    kind = str(f.type)
    try:
        if kind.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(s.strip() for s in items if s.strip())
        if kind.startswith("Mapping"):
            if isinstance(raw, str):
                pairs = (p.split(":", 1) for p in raw.split(",") if p.strip())
                return {k.strip(): float(v) for k, v in pairs}
            return {str(k): float(v) for k, v in dict(raw).items()}
        if name.endswith("_bytes"):
            return None if raw in ("", None) and "None" in kind else parse_bytes(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if raw in ("", None):
            return None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad value for {name}: {raw!r} ({exc})") from None


def load_settings(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                  config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from defaults < ``config_file`` (default: the project's ``runtime.toml``,
    see :func:`project_root`) < ``RUNTIME_*`` environment < ``overrides`` (CLI flags; None
    values are ignored).

    Raises ConfigError naming the source of an unknown field or bad value.
    """
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    # a found file is named relative to the cwd: "runtime.toml", "../runtime.toml"
    path = Path(config_file) if config_file else Path(os.path.relpath((project_root() or Path()) / CONFIG_FILE))
    if config_file or path.is_file():
        data, _ = read_config(path, names)  # the schedules: runtime.scheduler.config
        for key, raw in data.items():
            values[key] = _coerce(key, raw, str(path))
        if values.get("embedded_dir"):  # relative to the file's folder, wherever the command runs
            values["embedded_dir"] = str(path.absolute().parent / values["embedded_dir"])
    env = os.environ if env is None else env
    for key in names:
        raw = env.get("RUNTIME_" + key.upper())
        if raw is not None:
            values[key] = _coerce(key, raw, "RUNTIME_" + key.upper())
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in names:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, raw, "command line")
    return Settings(**values)
