"""What the `lossbench` commands share: the bad-input error, plain tables and warnings.

Labels, names and config values printed here may come from a results directory someone
sent: every cell and warning goes through :func:`lossbench.core.escaping.terminal`, so an
escape sequence in a label is shown, never sent to the terminal."""

from __future__ import annotations

import click

from lossbench.core.escaping import terminal


class InputError(click.ClickException):
    """Bad user input: one line, exit code 2."""

    exit_code = 2


def print_table(header, rows) -> None:
    """Plain aligned columns, every cell escaped for the terminal; the last column is not
    padded (it may be long)."""
    header = [terminal(c) for c in header]
    rows = [[terminal(c) for c in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    for i, row in enumerate([header, *rows]):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


def warn(problem: str) -> None:
    """One warning line on stderr, escaped for the terminal."""
    click.echo(f"lossbench: warning: {terminal(problem)}", err=True)


def echo(text: str, **kwargs) -> None:
    """``click.echo`` of a line that holds stored names or values: escaped for the terminal
    (line breaks of the text itself kept)."""
    click.echo("\n".join(terminal(line) for line in str(text).split("\n")), **kwargs)


def os_error_line(exc: OSError) -> str:
    """'PATH: cause' for a filesystem error (the message of one that names no path)."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="FILE.py|MODULE",
    help="Import a file or module that registers extra losses (repeatable). A plugin is "
         "code: it runs with your permissions, like any import.")


def load_plugins_or_exit(plugins: tuple[str, ...]) -> None:
    """``--plugin`` targets, loaded here first so a bad one is exit 2 before any run."""
    from lossbench.losses import PluginError, load_plugins

    try:
        load_plugins(plugins)
    except PluginError as exc:
        raise InputError(f"--plugin: {exc}") from None
