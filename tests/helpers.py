"""Tiny suites for end-to-end tests: seconds per run on one core."""

TINY_SECTIONS = {
    "data": {"markov_tokens": 20000, "markov_vocab": 8},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
    "train": {"steps": 20, "batch_size": 4, "warmup_steps": 2},
    "eval": {"eval_every": 10, "val_windows": 8, "rep_prefixes": 2, "rep_prefix_len": 4,
             "rep_continuation": 8},
}


def _toml(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def tiny_toml(name: str, losses: str, *, seeds=(0, 1), extra: str = "", **overrides) -> str:
    """A suite's TOML text: ``losses`` is the TOML list; ``overrides`` maps a section to the
    keys it changes, e.g. ``train={"steps": 40}``; ``extra`` is appended (e.g. a [tune] table)."""
    lines = [f'name = "{name}"', f"seeds = {list(seeds)}", f"losses = {losses}"]
    for section, keys in TINY_SECTIONS.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in {**keys, **overrides.get(section, {})}.items()]
    return "\n".join(lines) + "\n" + extra
