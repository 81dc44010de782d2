"""The report's "Gradient behaviour" section: the measured quantities of each loss (noise
scale, signal-to-noise, cosine with CE, Adam sharpness, update ratio; lossbench.train.gradients)
at the end and averaged over the run, each loss against the baseline seed by seed, one
sentence per significant difference, and what each loss pushes on (its logit-gradient
profile, lossbench.losses.profile).

The paired statistics go through :func:`paired` alone: the one place to switch to another
paired procedure."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lossbench.analysis.inference import MIN_SEEDS, paired_t
from lossbench.analysis.stats import ALPHA, holm, interval
from lossbench.core.metrics import metric
from lossbench.losses import UnknownLossError, get_loss
from lossbench.losses.profile import profile, unsupported
from lossbench.report import gradient_plots
from lossbench.report.document import Document, fmt
from lossbench.report.evidence import Evidence
from lossbench.report.verdict import mean_with_spread


@dataclass(frozen=True)
class Quantity:
    key: str  # the eval-record name; summary columns final_<key>, avg_<key>
    ratio: bool  # compared as a ratio (scale-like, > 0) rather than a difference
    up: str  # what more of it means, for the sentence
    down: str


QUANTITIES = (
    Quantity("grad_noise_scale", True,
             "tolerates ~{r} larger batches before a larger batch stops paying (critical "
             "batch size)", "saturates at ~{r} smaller batches (critical batch size)"),
    Quantity("grad_snr", True, "a cleaner gradient per coordinate",
             "a noisier gradient per coordinate"),
    Quantity("grad_cos_ce", False, "its gradient points closer to cross-entropy's",
             "its gradient points further from cross-entropy's"),
    Quantity("sharpness", True, "trains in sharper regions for Adam (closer to its stability "
             "edge)", "trains in flatter regions for Adam (further from its stability edge)"),
    Quantity("sharpness_eos", True, "sits closer to Adam's edge of stability",
             "sits further from Adam's edge of stability"),
    Quantity("hessian_max_eig", True, "a larger top Hessian eigenvalue",
             "a smaller top Hessian eigenvalue"),
    Quantity("update_ratio", True, "takes larger steps relative to the weights",
             "takes smaller steps relative to the weights"),
)


@dataclass(frozen=True)
class Paired:
    n: int
    estimate: float  # mean difference, or geometric-mean ratio
    low: float  # the interval of the per-seed differences (ratios)
    high: float
    kind: str
    p: float  # raw two-sided p; NaN when no test is possible


def paired(base: dict[int, float], other: dict[int, float], *, ratio: bool) -> Paired:
    """One loss against the baseline, seed by seed, with the report's procedure
    (lossbench.analysis.inference: the paired t-test on the per-seed differences, the
    t-interval of their mean). ``ratio``: on log values (positive values only), returned
    as a ratio. A probe quantity is not a result a loss can fail on: a seed without a
    finite value is not paired (the Verdict scores unfinished runs, not missing probes)."""
    def ok(v):
        return v is not None and math.isfinite(v) and (v > 0 or not ratio)

    def tx(v):
        return math.log(v) if ratio else v

    seeds = [s for s in base if s in other and ok(base[s]) and ok(other[s])]
    b, o = {s: tx(base[s]) for s in seeds}, {s: tx(other[s]) for s in seeds}
    test = paired_t([o[s] - b[s] for s in seeds], margin=0.0)
    spread = interval([o[s] - b[s] for s in seeds])

    def back(v):
        return math.exp(v) if ratio and math.isfinite(v) else v

    return Paired(test.n, back(test.mean), back(spread.low), back(spread.high),
                  spread.kind, test.p)


def comparisons(ev: Evidence, columns: list[str]) -> dict[str, dict[str, tuple[Paired, float]]]:
    """column -> label -> (Paired, Holm-adjusted p across labels) against the baseline."""
    out = {}
    for column in columns:
        q = _quantity(column)
        values = ev.scores.per_seed(column)
        base = values.get(ev.baseline)
        if base is None:
            continue
        rows = {label: paired(base, other, ratio=q.ratio) for label, other in values.items()
                if label != ev.baseline}
        adjusted = holm([r.p for r in rows.values()])
        out[column] = {label: (r, p) for (label, r), p in zip(rows.items(), adjusted)}
    return out


def _quantity(column: str) -> Quantity:
    key = column.split("_", 1)[1]
    return next(q for q in QUANTITIES if q.key == key)


def _present(ev: Evidence, prefix: str) -> list[str]:
    return [f"{prefix}_{q.key}" for q in QUANTITIES if f"{prefix}_{q.key}" in ev.columns]


def _effect(q: Quantity, r: Paired) -> str:
    if q.ratio:
        return f"{fmt(r.estimate, 3)}×"
    return f"{r.estimate:+.3g}"


def _bracket(r: Paired) -> str:
    if not (math.isfinite(r.low) and math.isfinite(r.high)):
        return ""
    sep = "×" if r.estimate > 0 and r.low > 0 else ""
    return f" [{fmt(r.low, 3)}{sep}, {fmt(r.high, 3)}{sep}] ({r.kind}, n={r.n})"


def sentence(label: str, baseline: str, column: str, r: Paired, p_holm: float) -> str:
    """'focal: gradient noise scale, mean 2.1× cross_entropy's [...] (Holm p = 0.03):
    tolerates ~2.1× larger batches ...'. Only for a significant difference."""
    q, m = _quantity(column), metric(column)
    more = r.estimate > 1 if q.ratio else r.estimate > 0
    size = fmt(r.estimate if more else 1 / r.estimate, 2) + "×" if q.ratio else ""
    meaning = (q.up if more else q.down).format(r=size)
    if q.ratio:
        value = f"{fmt(r.estimate, 3)}× {baseline}'s"
    else:
        value = f"{r.estimate:+.3g} against {baseline}"
    name = m.header.rsplit(",", 1)[0]  # "gradient noise scale, mean": the run average
    return f"{label}: {name} {value}{_bracket(r)}, Holm p = {fmt(p_holm, 2)}: {meaning}."


def significant_sentences(ev: Evidence, comps) -> list[str]:
    out = []
    for label in ev.table.label:
        for column, rows in comps.items():
            if label not in rows:
                continue
            r, p = rows[label]
            if r.n >= MIN_SEEDS and math.isfinite(p) and p < ALPHA:
                out.append(sentence(label, ev.baseline, column, r, p))
    return out


def _values_table(doc: Document, ev: Evidence, columns: list[str]) -> None:
    header = ["loss", *[metric(c).header.rsplit(",", 1)[0] + (f" ({metric(c).unit})"
                                                              if metric(c).unit else "")
                        for c in columns]]
    rows = [[row.label, *(mean_with_spread(row, c) for c in columns)]
            for row in ev.table.itertuples()]
    doc.table(header, rows)


def _comparison_table(doc: Document, ev: Evidence, comps) -> None:
    columns = list(comps)
    rows = []
    for label in ev.table.label:
        if label == ev.baseline:
            continue
        cells = []
        for c in columns:
            if label not in comps[c]:
                cells.append("–")
                continue
            r, p = comps[c][label]
            cells.append("–" if not r.n else
                         f"{_effect(_quantity(c), r)}{_bracket(r)}; p (Holm) {fmt(p, 2)}")
        rows.append([label, *cells])
    header = ["loss", *[metric(c).header.rsplit(",", 1)[0] for c in columns]]
    doc.table(header, rows)


def how_measured(ev: Evidence) -> str:
    """Which estimator each label's runs used (from the curves), in words."""
    curves = ev.curves.merge(ev.scores.runs[["run_id", "label"]], on="run_id")
    used = curves[curves.metric == "grad_vmap"].groupby("label").value.mean()
    size = curves[curves.metric == "grad_micro_batch"].value
    examples = curves[curves.metric == "grad_examples"].value
    looped = [label for label, v in used.items() if v < 1]
    if not len(examples):
        return ""
    per = "one sequence" if size.median() == 1 else f"{fmt(size.median())} sequences"
    text = (f"Noise scale and SNR: from the gradients of {fmt(examples.median())} sequences of "
            f"each probed batch, {per} per gradient (McCandlish et al.'s estimator, app. A). ")
    if looped:
        text += (f"torch.func.vmap could not trace {', '.join(looped)} (custom autograd "
                 f"functions or data-dependent branches), so those gradients came from a loop "
                 f"of backward passes instead: the same numbers, more time. ")
    return text


def section(doc: Document, ev: Evidence) -> None:
    doc.section("Gradient behaviour")
    avg, end = _present(ev, "avg"), _present(ev, "final")
    if not avg and not end:
        doc.text("Not measured: these runs were trained with [eval] grad_stats = false, or by "
                 "a lossbench that did not measure gradient behaviour yet.")
    else:
        doc.text("What each loss does to the gradient, measured at the update that ends at "
                 "each evaluation (docs/gradients.md). None of these numbers is better in "
                 "itself: a larger noise scale means the loss keeps profiting from larger "
                 "batches; a lower signal-to-noise, noisier steps; an Adam sharpness near its "
                 "threshold (1 in the ratio column), training at the edge of stability; an "
                 "update ratio far from ~1e-3, steps that are large or small for the weights. "
                 "The cosine with CE is 1 when the loss moves the weights where cross-entropy "
                 "would: losses that reweight CE per token (focal, label smoothing) stay near "
                 "1, distillation aims at the teacher's distribution instead of the one-hot "
                 "target and sits lower, a margin loss that ignores confident tokens lower "
                 "still. " + how_measured(ev))
        doc.text("Averaged over the run (mean over seeds [range or 95% CI, as in Results]):")
        _values_table(doc, ev, avg)
        doc.text("At the final evaluation:")
        _values_table(doc, ev, end)
        comps = comparisons(ev, avg)
        doc.text(f"Against {ev.baseline}, paired by seed, on the run averages: ratios "
                 f"(geometric mean over seeds) for scale-like quantities, differences for the "
                 f"cosine; the report's paired t-test, Holm-corrected across losses for "
                 f"each quantity.")
        _comparison_table(doc, ev, comps)
        found = significant_sentences(ev, comps)
        n = max((r.n for rows in comps.values() for r, _ in rows.values()), default=0)
        if found:
            doc.bullets(found)
        elif n and n < MIN_SEEDS:
            doc.text(f"With {n} seed{'s' if n != 1 else ''} nothing is tested (the paired "
                     f"t-test needs {MIN_SEEDS}): no difference above is called significant, "
                     f"which is not the same as no difference.")
        else:
            doc.text(f"No quantity differs significantly from {ev.baseline} (Holm p ≥ {ALPHA}).")
        _curves(doc, ev)
    _profiles(doc, ev)


def _curves(doc: Document, ev: Evidence) -> None:
    fig = gradient_plots.over_training(ev.curves, ev.scores.runs, baseline=ev.baseline)
    if fig is not None:
        doc.figure("gradient_behaviour", "Gradient behaviour over training (seed mean, min–max "
                   "band). Noise scale: the batch size in tokens up to which larger batches pay "
                   "(higher: larger batches stay useful). Signal-to-noise: higher is a cleaner "
                   "step. Adam sharpness ÷ threshold: 1 is the edge of stability, above it "
                   "steps oscillate. Update ratio: ‖Δθ‖/‖θ‖ per step, ~1e-3 typical.", fig)


def _vocab(ev: Evidence) -> int:
    data = ev.results[0]["config"].get("data", {}) if ev.results else {}
    return int(data.get("markov_vocab", 16)) if data.get("corpus") == "markov" else 16


def loss_profiles(runs: pd.DataFrame, vocab: int):
    """label -> Profile (at the label's hyperparameters), and label -> why none."""
    profiles, notes = {}, {}
    for label, g in runs.groupby("label", sort=False):
        row = g.iloc[0]
        hp = {c[3:]: float(row[c]) for c in g.columns
              if c.startswith("hp_") and pd.notna(row[c])}
        try:
            spec = get_loss(str(row["loss"]))
        except UnknownLossError:
            notes[label] = f"{row['loss']} is not registered here (--plugin?)"
            continue
        reason = unsupported(spec)
        if reason is not None:
            notes[label] = reason
            continue
        try:  # a plugin's loss is arbitrary code: its failure costs its panel, not the report
            profiles[label] = profile(spec, {k: v for k, v in hp.items() if k in spec.hparams},
                                      vocab=vocab)
        except Exception as e:  # noqa: BLE001
            notes[label] = f"its profile could not be computed ({type(e).__name__}: {e})"
    return profiles, notes


def _profiles(doc: Document, ev: Evidence) -> None:
    vocab = _vocab(ev)
    profiles, notes = loss_profiles(ev.scores.runs, vocab)
    if not profiles:
        return
    fig = gradient_plots.profile_grid(profiles, notes=notes,
                                      reference=profile(get_loss("cross_entropy"), vocab=vocab))
    doc.figure("logit_gradients", f"What each loss pushes on, from the loss function alone (no "
               f"training): the gradient on the logits of one prediction against its target "
               f"probability p_y (V = {vocab} classes, the other classes' mass in fixed "
               f"proportions). Solid: how hard it raises the target's logit (cross-entropy's "
               f"1 − p_y in grey): where it reaches 0, the loss stops learning that token. "
               f"Dashed: how hard it lowers all other classes together. Dotted: how hard it "
               f"lowers a class already seen in the context (what unlikelihood targets). "
               f"Y axes differ between panels: compare each loss with the grey line. "
               f"Distillation losses aim at the teacher's distribution (its p_y marked), "
               f"so their pull changes sign there.", fig)
