"""`lossbench losses`: the registry as a table (or JSON), and with --plot what each loss
pushes on (its logit-gradient profile, lossbench.losses.profile) as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lossbench.cli.common import (
    InputError,
    load_plugins_or_exit,
    os_error_line,
    plugin_option,
    print_table,
)


@click.command("losses")
@plugin_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.png",
              help="Also draw every loss's gradient on the logits against the target's "
                   "probability (at its default hyperparameters) into FILE.png.")
@click.option("--vocab", type=click.IntRange(3, 100_000), default=16, show_default=True,
              help="Classes of the --plot's prediction (label smoothing depends on it).")
def losses_cmd(plugins, as_json, plot, vocab):
    """List the registered losses with hyperparameters and references."""
    load_plugins_or_exit(plugins)
    from lossbench.losses import list_losses

    specs = list_losses()
    if plot is not None:
        _plot(specs, plot, vocab)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in specs], indent=2))
        return
    rows = [(s.name, s.description,
             ", ".join(f"{k}={h.describe()}" for k, h in s.hparams.items()) or "-",
             s.reference) for s in specs]
    print_table(("loss", "description", "hyperparameters (default in range)", "reference"), rows)


def _plot(specs, path: Path, vocab: int) -> None:
    if path.suffix.lower() != ".png":
        raise InputError(f"--plot: {path}: expected a .png file name")
    from lossbench.core.atomic import atomic_write_bytes
    from lossbench.losses import get_loss
    from lossbench.losses.profile import profile, unsupported
    from lossbench.report.document import png
    from lossbench.report.gradient_plots import profile_grid

    profiles, notes = {}, {}
    for spec in specs:
        reason = unsupported(spec)
        try:
            profiles[spec.name] = profile(spec, vocab=vocab) if reason is None else None
        except Exception as exc:  # noqa: BLE001  a plugin's loss that fails on the family
            reason = f"failed: {type(exc).__name__}: {exc}"
        if reason is not None:
            profiles.pop(spec.name, None)
            notes[spec.name] = reason
    fig = profile_grid(profiles, notes=notes,
                       reference=profile(get_loss("cross_entropy"), vocab=vocab))
    try:
        atomic_write_bytes(path, png(fig))
    except OSError as exc:
        raise InputError(f"--plot: {os_error_line(exc)}") from None
    click.echo(f"wrote {path}", err=True)
