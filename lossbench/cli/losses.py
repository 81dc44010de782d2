"""`lossbench losses`: the registry as a table (or JSON)."""

from __future__ import annotations

import json

import click

from lossbench.cli.common import load_plugins_or_exit, plugin_option, print_table


@click.command("losses")
@plugin_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def losses_cmd(plugins, as_json):
    """List the registered losses with hyperparameters and references."""
    load_plugins_or_exit(plugins)
    from lossbench.losses import list_losses

    specs = list_losses()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in specs], indent=2))
        return
    rows = [(s.name, s.description,
             ", ".join(f"{k}={h.describe()}" for k, h in s.hparams.items()) or "-",
             s.reference) for s in specs]
    print_table(("loss", "description", "hyperparameters (default in range)", "reference"), rows)
