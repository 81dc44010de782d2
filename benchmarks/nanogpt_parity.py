"""Parity with nanoGPT's own train.py: final weights, whole-split val CE and wall time, measured.

Given a local nanoGPT checkout (not part of this repository; copied to a temporary
directory and never modified in place), for each seed s, in this order:

1. nanoGPT: its train.py at its README's CPU configuration (below), in a subprocess timed
   from outside; seed s runs 1337 + s (train.py hard-codes torch.manual_seed(1337 +
   seed_offset); for s > 0 the temporary copy gets that one line changed to
   `1337 + seed_offset + s`, in a separate file train_seed<s>.py; s = 0 runs train.py as is).
2. replay: nanoGPT's initial weights (its own model.py, built right after the same
   manual_seed) and its exact batch sequence (the same torch.randint calls in train.py's
   order, the evaluation batches that consume the RNG included) through lossbench's
   train_run; reports max |weight difference| against nanoGPT's ckpt.pt.
3. lossbench: train_run at the same configuration with its own initialization and batches
   (run seed s), timed from outside; the corpus is loaded once, outside every timing.

Then the whole-split val CE (lossbench.train.evaluation.full_split_ce, the same call for all) of
nanoGPT's checkpoint and of lossbench's run, mean +- sd over seeds, and the wall-time ratio.

    python benchmarks/nanogpt_parity.py --nanogpt PATH [--text PATH] [--seeds 0 1] \
        [--steps 2000] [--threads 2]

Differences from the README's command, all needed to read the final weights: the
checkpoint is written at every evaluation (--always_save_checkpoint=True; the
shakespeare_char config otherwise keeps the step with the lowest 20-batch val loss), into
a temporary --out_dir; with --steps not a multiple of 250 nanoGPT evaluates (and so
checkpoints) every --steps instead of every 250 (the replay draws the same evaluation
batches). nanoGPT's wall time includes what a user waits for: Python and torch start-up,
its 20-batch evaluations, checkpoint writes, and one update more than lossbench
(train.py stops when iter_num > max_iters; ckpt.pt holds the weights after max_iters).
Its threads are set with OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.models.gpt import GPTConfig, build_model
from lossbench.train import loop as training
from lossbench.train.evaluation import full_split_ce

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
SEED_LINE = "torch.manual_seed(1337 + seed_offset)"
# nanoGPT README, "I only have a macbook": the CPU configuration lossbench's defaults copy
NANOGPT_CPU = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
               "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
               "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0"]
EVAL_ITERS, BLOCK, BATCH = 20, 64, 12


def prepare_checkout(src: Path, text: Path, tmp: Path) -> Path:
    """A private copy of the checkout with shakespeare_char prepared from ``text``:
    prepare.py only downloads when input.txt is missing, so nothing is downloaded."""
    dst = tmp / "nanoGPT"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", "out*", "__pycache__"))
    data = dst / "data" / "shakespeare_char"
    shutil.copyfile(text, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return dst


def train_script(checkout: Path, seed: int) -> str:
    """train.py for seed 0; a copy seeded 1337 + seed otherwise (train.py has no seed option)."""
    if seed == 0:
        return "train.py"
    source = (checkout / "train.py").read_text()
    if source.count(SEED_LINE) != 1:
        sys.exit(f"nanogpt_parity: {SEED_LINE!r} is not in this train.py exactly once: "
                 f"cannot seed it; run --seeds 0 only")
    name = f"train_seed{seed}.py"
    (checkout / name).write_text(source.replace(SEED_LINE, SEED_LINE[:-1] + f" + {seed})"))
    return name


def nanogpt_args(steps: int, out_dir: str) -> list[str]:
    eval_interval = 250 if steps % 250 == 0 else steps  # a checkpoint at the last step
    return NANOGPT_CPU + [f"--max_iters={steps}", f"--lr_decay_iters={steps}",
                          f"--eval_interval={eval_interval}", "--always_save_checkpoint=True",
                          f"--out_dir={out_dir}"]


def run_nanogpt(checkout: Path, seed: int, steps: int, threads: int) -> dict:
    """train.py in a subprocess, timed from outside; its log and checkpoint."""
    out_dir = f"out-seed{seed}"
    cmd = [sys.executable, train_script(checkout, seed), *nanogpt_args(steps, out_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"nanogpt_parity: nanoGPT's train.py failed ({proc.returncode}):\n"
                 f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    log = proc.stdout
    iters = re.findall(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms", log, re.M)
    evals = re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", log, re.M)
    try:  # plain dicts, tensors and numbers: no pickled code needs to run
        ckpt = torch.load(checkout / out_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        sys.exit(f"nanogpt_parity: ckpt.pt does not load with weights_only=True: {exc}")
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    return {"wall": wall, "ckpt": state, "iter_num": ckpt["iter_num"],
            "model_args": ckpt["model_args"],
            "losses": {int(i): loss for i, loss, _ in iters},  # as printed: 4 decimals
            "step_ms": statistics.median(float(ms) for i, _, ms in iters if int(i) > 0),
            "val20": float(evals[-1][2])}


def load_nanogpt_model(checkout: Path):
    """nanoGPT's model.py, imported from the checkout (not vendored)."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", checkout / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_init_and_batches(nano, model_args: dict, seed: int, steps: int,
                             train: torch.Tensor, val: torch.Tensor):
    """Replay train.py's use of the global RNG: manual_seed, the model's init, then every
    get_batch: the first train batch, and per iteration the evaluation batches (20 train +
    20 val at every eval_interval-th iteration) before the prefetch of the next train batch.
    Returns nanoGPT's initial state_dict and the (x, y) of each of the ``steps`` updates."""
    eval_interval = 250 if steps % 250 == 0 else steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1337 + seed)
        with contextlib.redirect_stdout(io.StringIO()):  # its parameter count, printed again
            model = nano.GPT(nano.GPTConfig(**model_args))  # consumes the RNG as train.py does
        init = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def get_batch(data: torch.Tensor):
            ix = torch.randint(len(data) - BLOCK, (BATCH,))
            return (torch.stack([data[i:i + BLOCK] for i in ix]),
                    torch.stack([data[i + 1:i + 1 + BLOCK] for i in ix]))

        batches = [get_batch(train)]
        for it in range(steps - 1):
            if it % eval_interval == 0:
                for data in (train, val):
                    for _ in range(EVAL_ITERS):
                        torch.randint(len(data) - BLOCK, (BATCH,))  # drawn, unused here
            batches.append(get_batch(train))
    return init, batches


def replay_run(config: RunConfig, init: dict, batches: list):
    """lossbench's train_run with nanoGPT's initial weights and batches swapped in. train_run
    has no argument for either (a run draws both from its seed), so the two places it gets
    them from are patched for this call only; the forward, loss, backward, clipping, AdamW,
    lr schedule and evaluation are train_run's own."""
    def nanogpt_init(gpt_config, seed):
        model = build_model(gpt_config, seed)
        model.load_state_dict(init)
        return model

    def nanogpt_batch(run, step, micro):
        x, y = batches[step]
        return x, y, {}

    with mock.patch.object(training, "build_model", nanogpt_init), \
            mock.patch.object(training.RunState, "batch", nanogpt_batch):
        return training.train_run(config)


def max_abs_diff(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        sys.exit(f"nanogpt_parity: state_dict keys differ: {sorted(a.keys() ^ b.keys())}")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def whole_split_ce(model, val: torch.Tensor) -> float:
    return full_split_ce(model, val, BLOCK, max_windows=10**9)[0]


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")


def load() -> str:
    """The machine is shared: each timing is printed with the load average before and after."""
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, type=Path, help="a nanoGPT checkout")
    parser.add_argument("--text", default=DEFAULT_TEXT, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = RunConfig(
        loss="cross_entropy",
        data=DataConfig(corpus="text", path=str(args.text), tokenizer="char"),
        model=ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=BLOCK, dropout=0.0,
                          bias=False),
        train=TrainConfig(steps=args.steps, batch_size=BATCH, lr=1e-3, min_lr=1e-4,
                          warmup_steps=100, weight_decay=0.1, beta2=0.99, grad_clip=1.0,
                          threads=args.threads),
        eval=EvalConfig(),  # lossbench's defaults, as in train_parity.py
    )
    corpus = training.cached_corpus(config.data)  # loaded once, outside every timing
    commit = subprocess.run(["git", "-C", str(args.nanogpt), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"nanoGPT {args.nanogpt} at {commit}; torch {torch.__version__}, {args.threads} "
          f"threads, {os.cpu_count()} CPUs; {args.steps} steps; {load()}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="nanogpt-parity-") as tmp:
        checkout = prepare_checkout(args.nanogpt, args.text, Path(tmp))
        data = checkout / "data" / "shakespeare_char"
        # the same tokens on both sides, or nothing below compares like with like
        for split, tokens in (("train", corpus.train), ("val", corpus.val)):
            theirs = torch.from_numpy(np.fromfile(data / f"{split}.bin", dtype=np.uint16)
                                      .astype(np.int64))
            if not torch.equal(theirs, tokens):
                sys.exit(f"nanogpt_parity: nanoGPT's {split}.bin differs from lossbench's tokens")
        nano = load_nanogpt_model(checkout)
        print(f"tokens identical: train {len(corpus.train):,}, val {len(corpus.val):,} "
              f"(whole-split CE over {(len(corpus.val) - 1) // BLOCK * BLOCK:,})")
        print("nanoGPT command: python " + " ".join(nanogpt_args(args.steps, "<tmp>")), flush=True)

        for seed in args.seeds:
            # 1. nanoGPT itself
            before = load()
            ng = run_nanogpt(checkout, seed, args.steps, args.threads)
            print(f"seed {seed} nanoGPT (torch.manual_seed({1337 + seed})): {ng['wall']:.1f} s "
                  f"wall, median step {ng['step_ms']:.1f} ms, ckpt at iter {ng['iter_num']}, "
                  f"its 20-batch val loss {ng['val20']:.4f} [{before} -> {load()}]", flush=True)
            # 2. the replay through train_run
            init, batches = nanogpt_init_and_batches(nano, ng["model_args"], seed, args.steps,
                                                     corpus.train, corpus.val)
            gpt = GPTConfig.of(config.model, corpus.vocab_size)
            init_gap = max_abs_diff(init, build_model(gpt, 1337 + seed).state_dict())
            t0 = time.perf_counter()
            replay = replay_run(dataclasses.replace(config, seed=seed), init, batches)
            replay_wall = time.perf_counter() - t0
            dw = max_abs_diff(ng["ckpt"], replay.model.state_dict())
            ours_losses = replay.steps["train_loss"]
            same = sum(f"{ours_losses[i]:.4f}" == ng["losses"][i] for i in range(args.steps))
            # lossbench averages per-token CE itself, nanoGPT prints F.cross_entropy's mean: the
            # two may differ in the last bit, so a value on a rounding boundary can print apart
            worst = max(abs(ours_losses[i] - float(ng["losses"][i])) for i in range(args.steps))
            print(f"seed {seed} replay: max |weight difference| to ckpt.pt {dw:.3g}; logged train "
                  f"losses equal to 4 decimals at {same}/{args.steps} steps (max |diff| to the "
                  f"printed value {worst:.2g}); lossbench's "
                  f"build_model(seed={1337 + seed}) vs nanoGPT's init: max |diff| "
                  f"{init_gap:.3g}; {replay_wall:.1f} s wall", flush=True)

            # 3. lossbench on its own
            before = load()
            t0 = time.perf_counter()
            ours = training.train_run(dataclasses.replace(config, seed=seed))
            wall = time.perf_counter() - t0
            ours_step_ms = 1000 * statistics.median(ours.steps["wall_s"])

            their_model = build_model(gpt, 0)  # lossbench's GPT holding nanoGPT's weights
            their_model.load_state_dict(ng["ckpt"])
            row = {"seed": seed, "nano_wall": ng["wall"], "ours_wall": wall, "dw": dw,
                   "nano_ce": whole_split_ce(their_model, corpus.val),
                   "replay_ce": whole_split_ce(replay.model, corpus.val),
                   "ours_ce": whole_split_ce(ours.model, corpus.val),
                   "nano_step_ms": ng["step_ms"], "ours_step_ms": ours_step_ms}
            rows.append(row)
            print(f"seed {seed} lossbench: {wall:.1f} s wall = {wall / ng['wall']:.2f}x nanoGPT's, "
                  f"median step {ours_step_ms:.1f} ms [{before} -> {load()}]", flush=True)
            print(f"seed {seed} whole-split val CE: nanoGPT {row['nano_ce']:.4f}, replay "
                  f"{row['replay_ce']:.4f}, lossbench {row['ours_ce']:.4f}", flush=True)

    print(f"\nsummary over {len(rows)} seed(s), {args.steps} steps, {args.threads} threads:")
    print("| seed | nanoGPT wall | lossbench wall | ratio | max abs dweight (replay) | "
          "val CE nanoGPT | val CE lossbench |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['nano_wall']:.1f} s | {r['ours_wall']:.1f} s | "
              f"{r['ours_wall'] / r['nano_wall']:.2f}x | {r['dw']:.3g} | {r['nano_ce']:.4f} | "
              f"{r['ours_ce']:.4f} |")
    print(f"whole-split val CE: nanoGPT {mean_sd([r['nano_ce'] for r in rows])}, lossbench "
          f"{mean_sd([r['ours_ce'] for r in rows])} (mean ± sd over seeds)")
    print(f"wall time lossbench / nanoGPT: median "
          f"{statistics.median(r['ours_wall'] / r['nano_wall'] for r in rows):.2f}x; median step "
          f"{statistics.median(r['ours_step_ms'] / r['nano_step_ms'] for r in rows):.2f}x; "
          f"max |weight difference| over seeds {max(r['dw'] for r in rows):.3g}; {load()}")


if __name__ == "__main__":
    main()
