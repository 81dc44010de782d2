"""Figures of gradient behaviour: what each loss pushes on (logit-gradient profiles, no
training), and the measured quantities over training. Drawing only: the profiles come from
lossbench.losses.profile, the curves from plots.seed_bands."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import ticker

from lossbench.core.escaping import plain
from lossbench.losses.profile import Profile
from lossbench.report import plots

TICKS = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
SERIES = (("pull", "pull up on the target  (−∂L/∂z_y)", "-"),
          ("push", "push down on the others  (Σ_{c≠y} ∂L/∂z_c)", "--"),
          ("repeated", "push down on a repeated token  (∂L/∂z_r)", ":"))


def profile_grid(profiles: dict[str, Profile], *, reference: Profile | None = None,
                 notes: dict[str, str] | None = None, ncols: int = 4):
    """One panel per label: pull, push and repeated-token push against p_y; the reference
    (cross-entropy) pull drawn thin and grey in every panel as the common yardstick, y axes
    not shared (squared hinge's pull reaches ~13 where most stay below 1); a loss with no
    profile gets a panel that says why (``notes``)."""
    names = list(profiles) + [n for n in (notes or {}) if n not in profiles]
    ncols = max(1, min(ncols, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows),
                             constrained_layout=True, squeeze=False, sharex=True)
    handles = []
    for ax, name in zip(axes.flat, names):
        ax.set_title(plain(name), fontsize=9)
        ax.set_xscale("logit")
        ax.set_xticks(TICKS, [f"{t:g}" for t in TICKS], fontsize=6)  # plain numbers
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.grid(alpha=0.3)
        prof = profiles.get(name)
        if prof is None:
            ax.text(0.5, 0.5, plain(_wrap((notes or {}).get(name, "no profile"))),
                    ha="center", va="center", fontsize=7, transform=ax.transAxes)
            continue
        if reference is not None:
            ref = ax.plot(reference.p_y, reference.pull, color="0.55", lw=0.9,
                          label=f"{plain(reference.loss)} pull (reference)")[0]
        for key, text, style in SERIES:
            line = ax.plot(prof.p_y, getattr(prof, key), ls=style, lw=1.4, label=text,
                           color={"pull": "C0", "push": "C3", "repeated": "C2"}[key])[0]
            if len(handles) < len(SERIES):
                handles.append(line)
        if prof.teacher_mass is not None:
            ax.axvline(prof.teacher_mass, color="0.4", lw=0.8, ls="-.")
            ax.text(prof.teacher_mass, 0.98, " teacher's p_y", fontsize=6, va="top",
                    transform=ax.get_xaxis_transform())
    if reference is not None and profiles:
        handles.append(ref)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.supxlabel("p_y, the model's probability of the target (logit scale)", fontsize=9)
    fig.supylabel("gradient on the logits", fontsize=9)
    if handles:
        fig.legend(handles, [h.get_label() for h in handles], loc="outside upper center",
                   ncol=2, fontsize=7)
    return fig


def _wrap(text: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


PANELS = (("grad_noise_scale", "gradient noise scale (tokens)", True),
          ("grad_snr", "gradient signal-to-noise (mean GSNR)", True),
          ("sharpness_eos", "Adam sharpness / stability threshold", True),
          ("update_ratio", "update / weight norm per step", True))


def over_training(curves: pd.DataFrame, runs: pd.DataFrame, *, baseline: str | None = None):
    """The measured quantities against the training step, one panel each (seed mean with a
    min-max band per label); None when no run measured any of them."""
    shown = [p for p in PANELS if (curves.metric == p[0]).any()]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown) + 1.6, 3.2),
                             constrained_layout=True, squeeze=False)
    for i, (ax, (metric, ylabel, log_y)) in enumerate(zip(axes.flat, shown)):
        bands = plots.seed_bands(curves, runs, metric)
        bands = bands[bands["mean"].notna()]
        plots.convergence(bands, ylabel=ylabel, log_y=log_y, baseline=baseline, ax=ax)
        if i < len(shown) - 1 and ax.get_legend() is not None:
            ax.get_legend().remove()  # one key, on the last panel
    return fig
