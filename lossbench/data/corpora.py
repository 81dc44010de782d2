"""Corpora: a generated Markov chain (default), a text file or folder, or the
Python standard library's source. Every corpus is a pure function of its
``DataConfig`` (and, for "text"/"stdlib", of the files' bytes, recorded in
``content_hash``), independent of the run seed: all runs of a comparison see
the same tokens.

Splits are contiguous, like nanoGPT: the first (1 - val_fraction) of the tokens
train, the rest validate. With ``tokenizer = "bpe"`` the cut is made on the
text instead (the first int(len(text) * (1 - val_fraction)) characters train),
the BPE merges are learned on the training text only, and the two parts are
encoded separately, so nothing about the validation text reaches the merges.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .markov import ALPHABET, MarkovSource
from .tokenizers import BPE_MIN_VOCAB, TOKENIZER_NAMES, get_tokenizer

CORPORA = ("markov", "text", "stdlib")
TEACHERS = ("ngram", "oracle", "smoothed")
# stdlib directories left out: installed packages and test suites (tests hold
# deliberately broken encodings and huge data files; the cap would be spent there)
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__",
                               "test", "tests", "idle_test"})


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "markov"  # "markov" (generated, no files) | "text" | "stdlib"
    path: str | None = None  # UTF-8 file or folder (read recursively), for "text"
    tokenizer: str = "char"  # "char" | "byte" | "bpe"; markov symbols are their own tokens
    # "bpe" only: vocabulary size (256 byte tokens + up to bpe_vocab - 256 merges,
    # learned on the training text; fewer if it runs out of pairs); >= 257.
    # The bpe extra: pip install "lossbench[bpe]"
    bpe_vocab: int = 512
    val_fraction: float = 0.1  # last 10% of the tokens, contiguous, like nanoGPT
    markov_vocab: int = 16  # symbols 'a'..'p'
    markov_order: int = 2  # tokens of context the chain conditions on
    markov_concentration: float = 0.3  # Dirichlet per row; small -> peaked, low entropy
    markov_tokens: int = 300_000
    corpus_seed: int = 0  # fixes the corpus; independent of the run seed
    teacher: str = "ngram"  # "ngram" | "oracle" (markov only) | "smoothed" (no teacher)
    ngram_order: int = 3  # n of the n-gram teacher: conditions on n-1 tokens
    ngram_add_k: float = 0.1  # add-k smoothing: every teacher probability > 0
    stdlib_max_bytes: int = 4_000_000  # stdlib corpus: files in sorted order up to this

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"DataConfig.corpus: unknown corpus {self.corpus!r}; "
                             f"expected one of {CORPORA}")
        if self.tokenizer not in TOKENIZER_NAMES:
            raise ValueError(f"DataConfig.tokenizer: unknown tokenizer {self.tokenizer!r}; "
                             f"expected one of {TOKENIZER_NAMES}")
        if (isinstance(self.bpe_vocab, bool) or not isinstance(self.bpe_vocab, int)
                or self.bpe_vocab < BPE_MIN_VOCAB):
            raise ValueError(f"DataConfig.bpe_vocab must be an int >= {BPE_MIN_VOCAB} (the 256 "
                             f"byte tokens plus at least one merge), got {self.bpe_vocab!r}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"DataConfig.teacher: unknown teacher {self.teacher!r}; "
                             f"expected one of {TEACHERS}")
        if self.teacher == "oracle" and self.corpus != "markov":
            raise ValueError(f"DataConfig.teacher: 'oracle' needs corpus='markov' (the only "
                             f"corpus with a known distribution), got corpus={self.corpus!r}")
        if self.corpus == "text" and not self.path:
            raise ValueError("DataConfig.path: corpus='text' needs a path to a file or folder")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"DataConfig.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 2 <= self.markov_vocab <= len(ALPHABET):
            raise ValueError(f"DataConfig.markov_vocab must be in [2, {len(ALPHABET)}], "
                             f"got {self.markov_vocab}")
        if self.markov_order < 1:
            raise ValueError(f"DataConfig.markov_order must be >= 1, got {self.markov_order}")
        if not self.markov_concentration > 0:
            raise ValueError(f"DataConfig.markov_concentration must be > 0, "
                             f"got {self.markov_concentration}")
        if self.markov_tokens < 2:
            raise ValueError(f"DataConfig.markov_tokens must be >= 2, got {self.markov_tokens}")
        if self.corpus_seed < 0:
            raise ValueError(f"DataConfig.corpus_seed must be >= 0, got {self.corpus_seed}")
        if self.ngram_order < 1:
            raise ValueError(f"DataConfig.ngram_order must be >= 1, got {self.ngram_order}")
        if not self.ngram_add_k > 0:
            raise ValueError(f"DataConfig.ngram_add_k must be > 0 (keeps every teacher "
                             f"probability positive), got {self.ngram_add_k}")
        if self.stdlib_max_bytes <= 0:
            raise ValueError(f"DataConfig.stdlib_max_bytes must be > 0, "
                             f"got {self.stdlib_max_bytes}")


@dataclass
class Corpus:
    train: torch.Tensor  # (N_train,) int64
    val: torch.Tensor  # (N_val,) int64
    vocab_size: int
    tokenizer: Any  # has .decode(ids) -> str
    entropy_rate: float | None  # nats/token; markov only (the best achievable val loss)
    content_hash: str  # sha256 of the raw corpus bytes / generated tokens (int64 LE)
    description: str  # one line, for reports
    source: MarkovSource | None = None  # the generating chain (markov only)


def split_tokens(tokens: np.ndarray, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: first int(n * (1 - val_fraction)) tokens train, the rest val."""
    n_train = int(len(tokens) * (1.0 - val_fraction))
    if n_train < 1 or n_train >= len(tokens):
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split of "
                         f"{len(tokens)} tokens")
    t = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    return t[:n_train].clone(), t[n_train:].clone()


def load_corpus(config: DataConfig) -> Corpus:
    """Build the corpus ``config`` describes (nothing is cached on disk)."""
    if config.corpus == "markov":
        return _markov_corpus(config)
    if config.corpus == "text":
        raw, what = _read_text_path(config.path)
    else:
        raw, what = _read_stdlib(config.stdlib_max_bytes)
    return _text_corpus(raw, what, config)


def _markov_corpus(config: DataConfig) -> Corpus:
    source = MarkovSource(config.markov_vocab, config.markov_order,
                          config.markov_concentration, seed=config.corpus_seed)
    tokens = source.sample(config.markov_tokens, seed=config.corpus_seed)  # (N,)
    train, val = split_tokens(tokens, config.val_fraction)
    h = source.entropy_rate()
    digest = hashlib.sha256(tokens.astype("<i8").tobytes()).hexdigest()
    desc = (f"markov V={source.vocab_size} order={source.order} "
            f"concentration={config.markov_concentration} seed={config.corpus_seed} "
            f"{len(tokens)} tokens, entropy rate {h:.4f} nats")
    return Corpus(train=train, val=val, vocab_size=source.vocab_size,
                  tokenizer=source.tokenizer, entropy_rate=h, content_hash=digest,
                  description=desc, source=source)


def _text_corpus(raw: bytes, what: str, config: DataConfig) -> Corpus:
    text = raw.decode("utf-8")  # already validated per file
    if not text:
        raise ValueError(f"{what}: corpus is empty")
    if config.tokenizer == "bpe":
        # cut the text, fit the merges on the training part only, encode the parts apart
        cut = int(len(text) * (1.0 - config.val_fraction))
        if cut < 1 or cut >= len(text):
            raise ValueError(f"val_fraction={config.val_fraction} leaves an empty split of "
                             f"{len(text)} characters")
        tokenizer = get_tokenizer("bpe", text[:cut], bpe_vocab=config.bpe_vocab)
        train_ids, val_ids = tokenizer.encode(text[:cut]), tokenizer.encode(text[cut:])
        train, val = torch.from_numpy(train_ids), torch.from_numpy(val_ids)
    else:
        tokenizer = get_tokenizer(config.tokenizer, text)  # char: vocabulary of the whole text
        tokens = tokenizer.encode(text)  # (N,)
        train, val = split_tokens(tokens, config.val_fraction)
    digest = hashlib.sha256(raw).hexdigest()
    desc = (f"{what}, {config.tokenizer} V={tokenizer.vocab_size} "
            f"{len(train) + len(val)} tokens, sha256 {digest[:12]}")
    return Corpus(train=train, val=val, vocab_size=tokenizer.vocab_size, tokenizer=tokenizer,
                  entropy_rate=None, content_hash=digest, description=desc, source=None)


def _read_utf8(file: Path) -> bytes:
    raw = file.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return raw


def _read_text_path(path: str | os.PathLike) -> tuple[bytes, str]:
    """A file's bytes, or a folder's files (recursive, sorted by relative path,
    hidden names skipped) joined with b"\\n". Returns (bytes, description)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"corpus path does not exist: {root}")
    if root.is_file():
        return _read_utf8(root), f"text {root.name}"
    files = sorted(
        (p for p in root.rglob("*")
         if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"corpus folder has no (non-hidden) files: {root}")
    return b"\n".join(_read_utf8(f) for f in files), f"text {root.name}/ ({len(files)} files)"


def stdlib_files(max_bytes: int) -> tuple[Path, list[Path]]:
    """The stdlib's .py files in sorted relative-path order, up to ``max_bytes``.

    Directories in ``_STDLIB_SKIP_DIRS`` are pruned while walking (site-packages
    can be huge). Files are taken in order until the next one would pass the cap.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]
        found += [Path(dirpath, f) for f in filenames if f.endswith(".py")]
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    chosen, total = [], 0
    for f in found:
        size = f.stat().st_size
        if total + size > max_bytes:
            break
        chosen.append(f)
        total += size + 1  # + the b"\n" separator
    return root, chosen


def _read_stdlib(max_bytes: int) -> tuple[bytes, str]:
    root, files = stdlib_files(max_bytes)
    if not files:
        raise ValueError(f"no stdlib .py file fits stdlib_max_bytes={max_bytes} under {root}")
    parts = []
    for f in files:
        raw = f.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a few modules declare a legacy coding; skipping is deterministic
        parts.append(raw)
    what = f"stdlib python{platform.python_version()} ({len(parts)} .py files)"
    return b"\n".join(parts), what
