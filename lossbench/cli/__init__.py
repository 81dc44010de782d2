"""The `lossbench` command line: one module per command (run, report and compare, runs and
status, check, losses), the group and entry point in :mod:`lossbench.cli.main`, and what
they share in :mod:`lossbench.cli.common`."""

from lossbench.cli.main import cli, main

__all__ = ["cli", "main"]
