"""The web dashboard: jobs, failures grouped, queues, workers and bulk actions in a
browser, over the read API (runtime.client.reader). ``runtime dashboard`` serves it; the
ASGI app :func:`create_app` makes can be mounted in your own app under a prefix.
Needs the ``dashboard`` extra (pip install 'runtime[dashboard]')."""

from .app import create_app
from .security import Auth, hash_password

__all__ = ["Auth", "create_app", "hash_password"]
