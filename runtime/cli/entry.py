"""The ``runtime`` console script. Patches gevent first thing for the worker, and only there.

Nothing else may be imported before the patch, so this module imports only the standard
library until it has decided.
"""

from __future__ import annotations

import sys

#: Global options of the ``runtime`` group that take a value (see runtime.cli.app).
_VALUED = {"--redis", "--prefix", "--mongodb", "--config"}


def subcommand(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (after the global options), or None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUED:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


#: Options of ``runtime worker`` that make it a supervisor when non-zero.
_SUPERVISING = {"--processes", "-p", "--mem-limit", "--mem-hard-limit", "--max-jobs", "--max-time"}


def supervises(argv: list[str]) -> bool:
    """Will ``runtime worker`` with ``argv`` run the supervisor (unpatched, no gevent)?
    The same rule as Settings.supervised, decided before click parses anything."""
    from ..process import is_supervised_child
    if is_supervised_child():
        return False
    config = None
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        if name == "--config":
            config = value
        elif name in _SUPERVISING and value.strip() not in ("", "0", "0.0"):
            return True
    try:
        from ..settings import load_settings
        return load_settings(config_file=config).supervised
    except Exception:  # noqa: BLE001 - the worker command reports bad settings itself
        return False


def escape_unencodable() -> None:
    """Have sys.stdout and sys.stderr write what their encoding cannot encode as escapes
    (``\\xe9``) rather than raise: an ASCII terminal or ``PYTHONIOENCODING=ascii`` must not
    fail a job that prints, nor a command that shows one."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # a TextIOWrapper; None when replaced
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def quiet_redis_import() -> None:
    """Import redis-py without the OpenTelemetry metrics API and SDK it loads when they are
    installed (for metrics of its own, which runtime never turns on; its imports of them are
    optional): a third of a read command's start. A command that needs them later (a
    worker's tracing, ``runtime job`` describing a report) imports them as usual."""
    blocked = ("opentelemetry.metrics", "opentelemetry.sdk.metrics")
    if "redis" in sys.modules or any(name in sys.modules for name in blocked):
        return
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes its import fail, at once
    try:
        import redis  # noqa: F401
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def main() -> None:
    escape_unencodable()
    # like `python -m` (and RQ's worker): tasks in the current folder can be imported
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    argv = sys.argv[1:]
    if subcommand(argv) == "worker" and not supervises(argv):
        from ..worker.patching import patch
        patch()
    else:
        quiet_redis_import()
    from ..settings import project_root
    root = project_root()  # and those of the project's root, from any of its subfolders
    if root is not None and str(root) not in sys.path:
        sys.path.insert(1, str(root))
    from .main import cli
    cli(prog_name="runtime")


if __name__ == "__main__":
    main()
