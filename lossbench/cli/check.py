"""`lossbench check`: property-test a loss in the shape it has.

Registered in :mod:`lossbench.cli`. Bad input (unknown loss, missing file, an option
that does not fit the function) is one line and exit 2, like every lossbench command.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from collections import Counter

import click

from lossbench.cli.common import InputError, plugin_option, print_table


def _assignments(values: tuple[str, ...], flag: str, *, literal: bool) -> dict:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InputError(f"{flag}: expected NAME={'VALUE' if literal else 'PARAM'}, "
                                  f"got {item!r}")
        value = value.strip()
        if literal:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass  # a bare word is a string: --set reduction=none
        out[name.strip()] = value
    return out


def _ranges(values: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """--range NAME=LO:HI (repeatable)."""
    out = {}
    for name, value in _assignments(values, "--range", literal=False).items():
        lo, sep, hi = value.partition(":")
        try:
            out[name] = (float(lo), float(hi))
        except ValueError:
            sep = ""
        if not sep:
            raise InputError(f"--range: expected NAME=LO:HI with numbers, got {name}={value}")
    return out


def _indent(text: str) -> str:
    return textwrap.indent(text, "    ")


@click.command("check")
@click.argument("target")
@plugin_option
@click.option("--profile", type=click.Choice(["dev", "ci", "thorough"]), default="dev",
              show_default=True,
              help="Hypothesis profile: dev (fast), ci (more examples, derandomized) or thorough "
                   "(long and wide inputs, T >= 256 and V >= 4096).")
@click.option("--max-examples", type=click.IntRange(1), default=None,
              help="Examples per property (overrides the profile).")
@click.option("--seed", type=int, default=None, help="Hypothesis seed for a reproducible search.")
@click.option("--property", "only", multiple=True, metavar="NAME",
              help="Run only these properties (repeatable).")
@click.option("--like", metavar="NAME", default=None,
              help="Check the function as an implementation of the registered loss NAME: "
                   "NAME's hyperparameters drawn by name over their ranges, NAME's claimed "
                   "properties, and matches_reference against NAME's reference.")
@click.option("--reduction", type=click.Choice(["none", "mean", "sum"]), default="none",
              show_default=True,
              help="What the function returns: per-token values, or their mean over kept "
                   "positions or sum (per-token values are recovered; the reduction is checked).")
@click.option("--flat", is_flag=True, help="The function takes (N, V) logits and (N,) targets.")
@click.option("--log-probs", is_flag=True,
              help="The function takes log-probabilities (log_softmax of the logits).")
@click.option("--ignore-index", type=int, default=None, metavar="K",
              help="The function's own padding id (e.g. 1 in fairseq); passed as ignore_index "
                   "when it takes one.")
@click.option("--teacher", default=None, metavar="probs|logits[:PARAM]",
              help="The function takes a teacher's probabilities or logits as PARAM "
                   "[default: its one parameter named *teacher*].")
@click.option("--set", "fixed", multiple=True, metavar="NAME=VALUE",
              help="A fixed keyword argument for the function (or its class); with --like, "
                   "holds NAME's hyperparameter at VALUE (repeatable).")
@click.option("--hparam-name", "renames", multiple=True, metavar="NAME=PARAM",
              help="With --like: pass NAME's hyperparameter NAME as the function's PARAM.")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LO:HI",
              help="Draw NAME from [LO, HI]: narrows a --like hyperparameter's range, or draws "
                   "one of the function's own parameters (repeatable).")
@click.option("--targets", "targets_param", default=None, metavar="NAME|none",
              help="The parameter that takes the targets, or none for a loss without targets "
                   "[default: the first positional parameter after the logits that no other "
                   "option gives a value].")
@click.option("--logits-key", default=None, metavar="KEY",
              help="Pass the logits inside a model output: out[KEY], out.KEY and out[0].")
@click.option("--targets-key", default=None, metavar="KEY",
              help="Pass the targets inside a batch dict: batch[KEY].")
@click.option("--vocab-arg", default=None, metavar="NAME",
              help="An argument of the function or its class that must equal the vocabulary "
                   "size (num_classes=V); passed on every call.")
@click.option("--chunk", type=click.IntRange(2), default=None, metavar="N",
              help="The function splits its input into chunks of N (tokens or classes): draw "
                   "shapes around N instead of the profile's long shapes.")
@click.option("--non-causal", is_flag=True,
              help="With --reduction: the loss at a position may depend on later positions; "
                   "check its total and its gradient at each position (detected on its own "
                   "when it shows on a plain input).")
def check_cmd(target, plugins, profile, max_examples, seed, only, like, reduction, flat,
              log_probs, ignore_index, teacher, fixed, renames, ranges, targets_param,
              logits_key, targets_key, vocab_arg, chunk, non_causal):
    """Property-test losses with hypothesis.

    TARGET is a registered loss name, `all`, `path/file.py:NAME` or `module:NAME`,
    where NAME is a function, an nn.Module class (built with the drawn
    hyperparameters, then called), a callable, or Class.method (a criterion class built
    per call, then its method called). Registered losses are checked on the properties
    they declare, a function on the generic ones, or with --like on NAME's. Exit 0 when
    all pass, 1 when any fails, 2 for bad input.
    """
    options = dict(reduction=reduction, flat=flat, log_probs=log_probs, ignore_index=ignore_index,
                   teacher=teacher, like=like,
                   fixed=_assignments(fixed, "--set", literal=True),
                   hparam_names=_assignments(renames, "--hparam-name", literal=False),
                   ranges=_ranges(ranges), targets=targets_param, logits_key=logits_key,
                   targets_key=targets_key, vocab_arg=vocab_arg, chunk=chunk,
                   non_causal=non_causal)
    specs = _resolve(target, plugins, options, only)
    stopped, results = _run_checks(specs, plugins, only, profile=profile,
                                   max_examples=max_examples, seed=seed)
    _print_outcome(stopped, results)
    sys.exit(1 if stopped or any(not r.passed for r in results) else 0)


def _resolve(target: str, plugins, options: dict, only) -> list:
    """The check specs of TARGET, every input problem an InputError (exit 2) before any check."""
    from lossbench.checks import PROPERTIES, CheckTargetError, resolve_targets
    from lossbench.checks.runner import ordered_properties
    from lossbench.losses import PluginError, load_plugins

    try:
        load_plugins(plugins)
    except PluginError as exc:
        raise InputError(f"--plugin: {exc}") from None
    try:
        specs = resolve_targets(target, **options)
    except CheckTargetError as exc:
        message = str(exc)
        raise InputError(message if message.startswith("--") else f"TARGET: {message}") \
            from None
    unknown = [p for p in only if p not in PROPERTIES]
    if unknown:
        raise InputError(f"--property: unknown {unknown}; known: "
                         f"{', '.join(sorted(PROPERTIES))}")
    for p in only:
        if not any(p in ordered_properties(s) for s in specs):
            applies = ", ".join(ordered_properties(specs[0])) if len(specs) == 1 else ""
            how = ("claim a registered loss's properties with --like NAME"
                   if getattr(specs[0], "source", "") else "the loss does not claim it")
            raise InputError(f"--property {p}: does not apply to {target}"
                             f"{f' (checked on: {applies})' if applies else ''}; {how}")
    return specs


def _run_checks(specs, plugins, only, **run_options) -> tuple[list, list]:
    """(specs stopped by a diagnosis before any property, property results), in order."""
    from lossbench.checks import diagnose
    from lossbench.checks.runner import ordered_properties, run_property

    with_plugins = f", plugins={list(plugins)!r})" if plugins else ")"
    stopped, results = [], []
    for spec in specs:
        for line in getattr(spec, "notes", ()):
            click.echo(f"note: {spec.name} {line}")
        diagnosis = diagnose(spec)
        if diagnosis is not None:
            stopped.append((spec, diagnosis))
            continue
        source = (getattr(spec, "source", "") or f"load_target({spec.name!r})")[:-1] + with_plugins
        names = [p for p in ordered_properties(spec) if not only or p in only]
        results += [run_property(spec, p, source=source, **run_options) for p in names]
    return stopped, results


def _print_outcome(stopped: list, results: list) -> None:
    """The table, each failure with its traceback and runnable reproduction, the warnings
    (each once with its count), and the count line."""
    from lossbench.checks.runner import same_error

    for spec, diagnosis in stopped:
        click.echo(f"{spec.name}: {diagnosis.message}")
        if diagnosis.detail:
            click.echo(_indent(diagnosis.detail))
    if results:
        print_table(("loss", "property", "result", "detail"),
                    [(r.loss, r.prop, r.status, (r.message or r.warning).splitlines()[0]
                      if r.message or r.warning else "") for r in results])
    failures = [r for r in results if not r.passed]
    for k, r in enumerate(failures):
        click.echo(f"\n--- {r.loss}: {r.prop} failed: {r.message}")
        first = next((f for f in failures[:k] if same_error(f, r)), None)
        if first is not None:
            click.echo(f"(the same error as under {first.prop}; its traceback is above)")
        elif r.error:
            click.echo("Raised inside the loss:\n" + _indent(r.error))
        if r.reproduction:
            click.echo("Falsifying example (runnable):\n" + _indent(r.reproduction))
    for r in results:
        if r.warning:
            click.echo(f"\n--- {r.loss}: {r.prop} passed with a warning: {r.warning}")
    _print_warning_counts(results)
    n_warn = sum(r.status == "warn" for r in results)
    warned = f" ({n_warn} with a warning)" if n_warn else ""
    click.echo(f"\n{len(results) - len(failures)} passed{warned}, "
               f"{len(failures) + len(stopped)} failed")


def _print_warning_counts(results: list) -> None:
    counts: dict[str, Counter] = {}
    for r in results:
        for line, n in r.warnings:
            counts.setdefault(r.loss, Counter())[line] += n
    for loss, counter in counts.items():
        click.echo(f"\nwarnings from {loss}, each once with its count:")
        for line, n in counter.most_common():
            click.echo(f"    {n}x {line}")
