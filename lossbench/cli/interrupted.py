"""The one line a Ctrl-C (or SIGTERM) prints, kept apart so the entry point can print it
before the commands (and torch, pandas) have loaded."""

INTERRUPTED = "lossbench: interrupted; rerun the same command to resume (finished runs are kept)"
