"""peerbench adapter for runtime (this repository).  Worker: `runtime worker`.

Usable two ways (see bench/README.md):
  * on PYTHONPATH:        --adapter runtime=runtime_adapter@/path/to/python
  * copied to adapters/:  --adapter runtime=adapters.runtime_adapter@/path/to/python
The tasks module is found next to this file either way (RUNTIME_TASK_MODULES is set to
its dotted name, so the worker is allowed to import it).  The interpreter must have
runtime installed (`pip install -e .`); the `runtime` console script next to it starts
the worker, pointed at PEERBENCH_REDIS_URL with its own key prefix.
"""

import os
import shutil
import sys

import harness
from harness import REDIS_URL, WorkerSpec, venv_bin

TASKS = (__package__ + "." if __package__ else "") + "runtime_pbtasks"
PREFIX = os.environ.get("PEERBENCH_RUNTIME_PREFIX", "pbrt")
QUEUE = "default"
PATHS = {k: TASKS + "." + k for k in ("noop", "sleep10", "probe")}

# variant: greenlets of the one worker process (None = runtime's default, 25)
GREENLETS = {"g100": 100, "g50": 50, "default": None, "g1": 1}


def runtime_bin():
    exe = venv_bin(sys.executable, "runtime")
    if os.access(exe, os.X_OK):
        return exe
    found = shutil.which("runtime")
    if not found:
        raise RuntimeError(f"no `runtime` console script next to {sys.executable} or on PATH")
    return found


class Adapter(harness.Adapter):
    name = "runtime"
    packages = ("runtime", "redis", "hiredis", "gevent")
    variants = {
        "enqueue": ["call", "bulk"],
        # both: which is faster depends on the machine (g100 on session 2's, the default
        # 25 on session 4's, where 100 concurrent connections make each task's INCR dearer)
        "drain": ["g100", "default"],
        "io": ["g50"],
        "latency": ["default", "g1"],
    }
    descriptions = {
        "call": "Client.queue_job() per job (one Lua script call)",
        "bulk": "Client.queue_jobs(), batches of 1000 (one Lua call per batch)",
        "g100": "runtime worker --greenlets 100 (1 process, gevent)",
        "g50": "runtime worker --greenlets 50 (1 process, gevent)",
        "default": "runtime worker (default 25 greenlets)",
        "g1": "runtime worker --greenlets 1",
    }
    has_bulk = True
    has_result_api = True

    def setup(self, scenario, variant):
        from runtime.client import Client
        from runtime.settings import load_settings

        # env={} : no RUNTIME_* variable of the caller changes what is measured
        self.c = Client(load_settings({"redis_url": REDIS_URL, "key_prefix": PREFIX}, env={}))

    def enqueue(self, kind, arg):
        key = "seq" if kind == "probe" else "target"
        return self.c.queue_job(PATHS[kind], {key: arg}, queue=QUEUE)

    def enqueue_bulk(self, kind, args):
        key = "seq" if kind == "probe" else "target"
        return self.c.queue_jobs(PATHS[kind], [{key: a} for a in args], queue=QUEUE,
                                 batch_size=self.bulk_batch)

    def wait_result(self, job_id, timeout):
        job = self.c.wait(job_id, timeout)
        if job.status.value != "success":
            raise RuntimeError(f"job {job_id} ended {job.status.value}: {job.exc_type} {job.exc_message}")
        return job.result

    def result_method(self, variant):
        return "Client.wait(id) (notify list, BLPOP)"

    def queue_length(self):
        return self.c.redis.zcard(self.c.broker.keys.ready(QUEUE))

    def worker(self, scenario, variant):
        g = GREENLETS.get(variant)
        argv = [runtime_bin(), "--redis", REDIS_URL, "--prefix", PREFIX, "worker",
                "--queues", QUEUE, "--log-level", "WARNING"]
        if g:
            argv += ["--greenlets", str(g)]
        return WorkerSpec(
            argv=argv,
            env={"RUNTIME_TASK_MODULES": TASKS, "RUNTIME_REDIS_URL": REDIS_URL, "RUNTIME_KEY_PREFIX": PREFIX},
            concurrency=g or 25,
        )
