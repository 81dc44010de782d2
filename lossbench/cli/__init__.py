"""The `lossbench` command line: one module per command (run, report and compare, runs and
status, check, losses), the group and entry point in :mod:`lossbench.cli.main`, and what
they share in :mod:`lossbench.cli.common`.

Loading the commands imports torch and pandas (a second or more): a Ctrl-C meanwhile is
one line and exit 130 too, not a KeyboardInterrupt traceback from the import machinery."""

import signal
import sys

from lossbench.cli.interrupted import INTERRUPTED

try:
    from lossbench.cli.main import cli, main
except KeyboardInterrupt:  # nothing has started yet
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(INTERRUPTED, file=sys.stderr, flush=True)
    sys.exit(130)

__all__ = ["cli", "main"]
