"""The web dashboard: jobs, failures grouped, queues, workers and bulk actions in a
browser, over the read API (runtime.client.reader). ``runtime dashboard`` serves it; the
ASGI app :func:`create_app` makes (or the WSGI app of :func:`create_wsgi_app`) can be
mounted in your own app under a prefix, behind its auth (docs/dashboard.md).
Needs the ``dashboard`` extra (pip install 'runtime[dashboard]')."""

from .app import create_app
from .security import Auth, hash_password
from .wsgi import create_wsgi_app

__all__ = ["Auth", "create_app", "create_wsgi_app", "hash_password"]
