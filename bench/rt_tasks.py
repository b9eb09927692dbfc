"""Tasks of bench/throughput.py (the worker is started with --tasks tasks_example,bench.rt_tasks)."""

import time


def stamp() -> float:
    """The worker's clock when the task body starts (cross-checks the job's started_at)."""
    return time.time()
