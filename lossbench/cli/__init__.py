"""The `lossbench` command line: one module per command (run, report and compare, runs and
status, check, losses), the group and entry point in :mod:`lossbench.cli.main`, and what
they share in :mod:`lossbench.cli.common`.

This module stays light: the entry point imports the commands (torch among them, a second
or more) inside :func:`main`, so a Ctrl-C while they load is one line and exit 130 too."""

from __future__ import annotations

import signal
import sys

from lossbench.cli.common import INTERRUPTED


def main(argv=None) -> None:
    """The `lossbench` entry point (:func:`lossbench.cli.main.main`), loaded here."""
    try:
        from lossbench.cli.main import main as run
    except KeyboardInterrupt:  # Ctrl-C while the modules load: nothing has started
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(INTERRUPTED, file=sys.stderr, flush=True)
        sys.exit(130)
    run(argv)


def __getattr__(name: str):
    if name == "cli":  # the click group, for tests and embedding
        from lossbench.cli.main import cli

        return cli
    raise AttributeError(f"module 'lossbench.cli' has no attribute {name!r}")


__all__ = ["cli", "main"]
