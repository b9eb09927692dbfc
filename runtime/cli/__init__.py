"""The ``runtime`` command: parses arguments and formats output; the library does the rest.

``runtime.cli.entry`` is the console script (it must patch gevent before anything else is
imported, so this package imports nothing itself); ``runtime.cli.main.cli`` is the command.
"""
