"""The producer side and the read API: :class:`Client`, the default client's functions,
and the :class:`Reader` the CLI reads with."""

from .client import Client
from .defaults import default_client, get_job, queue_job, queue_jobs, set_default_client, wait
from .parts import Parts, build
from .reader import Reader

__all__ = ["Client", "Parts", "Reader", "build", "default_client", "get_job", "queue_job", "queue_jobs",
           "set_default_client", "wait"]
