"""The ``runtime`` command with every subcommand registered (import this, then call ``cli``)."""

from __future__ import annotations

from . import admin, check, dashboard, jobs, schedules, workers  # noqa: F401 - each registers its commands on the group
from .app import cli

__all__ = ["cli"]
