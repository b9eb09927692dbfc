"""peerbench adapter "runtime-obs": runtime with its observability on, for issue 3's target.

The same worker as runtime_adapter (100 greenlets, one process), with the default
middleware (tracing, metrics, timing, memory, logs, Sentry-off) and spans and metrics
exported over OTLP/HTTP to PEERBENCH_OTLP_ENDPOINT (bench/otlp_sink.py: accepts and
discards, or with --decode decodes every span on the same CPUs), and the no-op
task reporting progress once (set_progress). Drain only.
"""

import os

import harness

try:
    from . import runtime_adapter as base
except ImportError:
    import runtime_adapter as base


class Adapter(base.Adapter):
    name = "runtime-obs"
    variants = {"drain": ["g100obs"]}
    descriptions = {"g100obs": "runtime worker --greenlets 100, traces+metrics exported over OTLP, progress, logs, timing"}

    def worker(self, scenario, variant):
        endpoint = os.environ.get("PEERBENCH_OTLP_ENDPOINT")
        if not endpoint:
            raise RuntimeError("runtime-obs needs PEERBENCH_OTLP_ENDPOINT (start bench/otlp_sink.py)")
        spec = base.Adapter.worker(self, scenario, "g100")
        spec.env.update({"RUNTIME_OTLP_ENDPOINT": endpoint, "RUNTIME_PB_PROGRESS": "1"})
        return spec

    def setup(self, scenario, variant):
        super().setup(scenario, "g100")


assert issubclass(Adapter, harness.Adapter)
