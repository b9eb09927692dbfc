"""The ``runtime`` console script. Patches gevent first thing for the worker, and only there."""

from __future__ import annotations

import sys

#: Global options of the ``runtime`` group that take a value (see runtime.cli.cli).
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


def main() -> None:
    # like `python -m` (and RQ's worker): tasks in the current folder can be imported
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    if subcommand(sys.argv[1:]) == "worker":
        from gevent import monkey
        monkey.patch_all()
    from .cli import cli
    cli(prog_name="runtime")


if __name__ == "__main__":
    main()
