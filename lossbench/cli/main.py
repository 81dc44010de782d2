"""The `lossbench` command group and its entry point.

Bad input (unknown loss, missing file, wrong signature, bad option) prints one
line ``lossbench: error: ...`` to stderr and exits 2, never a traceback; Ctrl-C and
SIGTERM print one line and exit 130.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from lossbench import __version__
from lossbench.cli.check import check_cmd
from lossbench.cli.common import InputError, os_error_line
from lossbench.cli.interrupted import INTERRUPTED
from lossbench.cli.losses import losses_cmd
from lossbench.cli.report import compare_cmd, report_cmd
from lossbench.cli.run import run_cmd
from lossbench.cli.status import runs_cmd, status_cmd
from lossbench.core.escaping import terminal
from lossbench.sweep.executors import ExecutorUnavailable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lossbench")
def cli():
    """Compare training losses for language models on identical small GPT runs."""


for command in (losses_cmd, run_cmd, report_cmd, compare_cmd, runs_cmd, status_cmd, check_cmd):
    cli.add_command(command)


def main(argv=None) -> None:
    """Entry point: click errors become one line on stderr with exit code 2; Ctrl-C and
    SIGTERM one line with exit code 130 (running runs saved a checkpoint: rerun to resume)."""
    previous = _sigterm_as_interrupt()
    try:
        cli.main(args=argv, prog_name="lossbench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):  # click turns KeyboardInterrupt into Abort
        _ignore_interrupts()  # a second Ctrl-C now would only print a traceback
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except ExecutorUnavailable as exc:
        click.echo(f"lossbench: error: {terminal(exc)}", err=True)
        sys.exit(2)
    except click.ClickException as exc:  # messages may quote stored names: escaped
        click.echo(f"lossbench: error: {terminal(exc.format_message())}", err=True)
        sys.exit(2 if isinstance(exc, (InputError, click.UsageError)) else exc.exit_code)
    except OSError as exc:  # a full disk, a read-only folder, a file in the way: anywhere
        click.echo(f"lossbench: error: {terminal(os_error_line(exc))}", err=True)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)




def _sigterm_as_interrupt():
    """Make SIGTERM (kill, a CI timeout, systemd) stop us like Ctrl-C; return the old handler
    (None when not on the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return signal.SIG_DFL if previous is None else previous


def _ignore_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
