"""Middleware used by the tests (loaded by dotted path through RUNTIME_MIDDLEWARE)."""

from __future__ import annotations

from typing import Any

from runtime.middleware import Middleware


class BrokenBefore(Middleware):
    def before_job(self, job):
        if job.path.endswith("add"):
            raise ValueError("before hook exploded")


class BrokenAfter(Middleware):
    def after_job(self, job, outcome):
        raise KeyError("after hook exploded")


class Flavour(Middleware):
    """Declares a task option and reports it."""

    task_options = {"flavour": "a test option"}

    def after_job(self, job, outcome):
        job.report["flavour"] = {"seen": job.path}


class OnlyAdd(Middleware):
    """Applies only to testtasks.add: its hooks must never see another task's job."""

    def applies(self, path):
        return path == "testtasks.add"

    def before_job(self, job):
        job.report["only_add"] = {"before": job.path}

    def after_job(self, job, outcome):
        job.report.setdefault("only_add", {})["after"] = job.path


class Stamp(Middleware):
    """Stores a report section and an artifact, and shows both itself."""

    report_keys = ("stamp",)
    artifacts = ("note",)

    def after_job(self, job, outcome):
        job.report["stamp"] = {"path": job.path, "params": job.params}
        job.store_artifact("note", f"note of {job.job_id}")

    def describe(self, job):
        stamp = job.report.get("stamp")
        return [("stamp", f"stamped {stamp['path']}")] if stamp else []

    def render_artifact(self, name, data, html=False):
        return f"<p>{data}</p>" if html else data.upper()


class RawNote(Middleware):
    """Stores an artifact and leaves its rendering to the default."""

    artifacts = ("raw",)

    def after_job(self, job, outcome):
        job.store_artifact("raw", "<b>as stored</b>")


class HeavyStart(Middleware):
    """Grows the worker by 40 MiB at start, as importing a large library does."""

    held: list[bytearray] = []

    def on_worker_start(self, worker: Any) -> None:
        block = bytearray(40 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touched: counted in RSS
        HeavyStart.held.append(block)
