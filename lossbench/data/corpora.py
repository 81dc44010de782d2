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

from lossbench.core.config import DataConfig
from lossbench.core.memory import MARKOV_BYTES_PER_TOKEN, TEXT_BYTES_PER_TOKEN
from lossbench.core.threads import blas_thread_independent

from .markov import MarkovSource
from .tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    HFTokenizer,
    IdTokenizer,
    get_tokenizer,
)
from .tokens import inspect_folder, open_split

# stdlib directories left out: installed packages and test suites (tests hold
# deliberately broken encodings and huge data files; the cap would be spent there)
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__",
                               "test", "tests", "idle_test"})
# Sampling runs at ~0.65 us/token and peaks at ~72 bytes/token
# (validation.MARKOV_BYTES_PER_TOKEN): 200M tokens are ~2 min and ~14 GiB, far past a
# "small" benchmark; a suite is also checked against the machine's memory.


@dataclass
class Corpus:
    train: torch.Tensor  # (N_train,) int64; uint16/uint32 over a memory map for token folders
    val: torch.Tensor  # (N_val,) likewise
    vocab_size: int
    tokenizer: Any  # has .decode(ids) -> str
    entropy_rate: float | None  # nats/token; markov only (the best achievable val loss)
    content_hash: str  # sha256 of the raw corpus bytes / generated tokens (int64 LE)
    description: str  # one line, for reports
    source: MarkovSource | None = None  # the generating chain (markov only)
    # token folders: (train.bin, dtype), read per batch (tokens.read_windows), not via the map
    train_file: tuple[Path, str] | None = None


def split_tokens(tokens: np.ndarray, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: first int(n * (1 - val_fraction)) tokens train, the rest val."""
    n_train = int(len(tokens) * (1.0 - val_fraction))
    if n_train < 1 or n_train >= len(tokens):
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split of "
                         f"{len(tokens)} tokens")
    t = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    return t[:n_train].clone(), t[n_train:].clone()


@blas_thread_independent  # its entropy rate enters every markov run's excess_ce
def load_corpus(config: DataConfig) -> Corpus:
    """Build the corpus ``config`` describes (nothing is cached on disk), numpy's BLAS on
    one thread (lossbench.core.threads)."""
    if config.corpus == "markov":
        return _markov_corpus(config)
    if config.corpus in ("tokens", "hf"):
        return _token_corpus(config)
    if config.corpus == "text":
        raw, what = _read_text_path(config.path)
    else:
        raw, what = _read_stdlib(config.stdlib_max_bytes)
    return _text_corpus(raw, what, config)


@dataclass(frozen=True)
class CorpusFacts:
    """What a suite checks about a corpus before any run starts, without building it."""

    content_hash: str | None  # text/stdlib: sha256 of the bytes (= Corpus.content_hash)
    vocab_size: int  # exact for markov, char and byte; bpe: bpe_vocab, an upper bound
    n_train: int  # tokens of each split; bpe: the part's UTF-8 bytes, an upper bound
    n_val: int
    build_bytes: int  # memory while the corpus is built (validation.*_BYTES_PER_TOKEN)
    upper_bound: bool = False  # n_train / n_val are bounds (bpe), not counts


def corpus_facts(config: DataConfig) -> CorpusFacts:
    """Read the corpus as ``load_corpus`` does (the same errors for a missing, empty,
    binary or non-UTF-8 path) and count instead of tokenizing: tokens are characters
    (char) or bytes (byte, and bpe's upper bound: a merge only ever joins bytes)."""
    if config.corpus == "markov":
        n = config.markov_tokens
        n_train = int(n * (1.0 - config.val_fraction))
        return CorpusFacts(None, config.markov_vocab, n_train, n - n_train,
                           n * MARKOV_BYTES_PER_TOKEN)
    if config.corpus in ("tokens", "hf"):  # memory-mapped: nothing is built in memory
        folder, digest = _token_folder(config)
        return CorpusFacts(digest, folder.vocab_size, folder.n_train, folder.n_val, 0)
    raw, what = _read_text_path(config.path) if config.corpus == "text" else \
        _read_stdlib(config.stdlib_max_bytes)
    if not raw:
        raise ValueError(f"{what}: corpus is empty")
    text = raw.decode("utf-8")  # validated while reading
    digest = hashlib.sha256(raw).hexdigest()
    if config.tokenizer == "bpe":  # the cut is made on the text (see the module docstring)
        n_train = len(text[:int(len(text) * (1.0 - config.val_fraction))].encode("utf-8"))
        return CorpusFacts(digest, config.bpe_vocab, n_train, len(raw) - n_train,
                           len(raw) * TEXT_BYTES_PER_TOKEN, upper_bound=True)
    if config.tokenizer == "hf":  # no bound to count by: tokenize
        tokenizer = load_tokenizer(config, None)
        n, vocab = len(tokenizer.encode(text)), tokenizer.vocab_size
    else:
        n, vocab = (len(text), len(set(text))) if config.tokenizer == "char" else (len(raw), 256)
    n_train = int(n * (1.0 - config.val_fraction))
    return CorpusFacts(digest, vocab, n_train, n - n_train, n * TEXT_BYTES_PER_TOKEN)


def _markov_corpus(config: DataConfig) -> Corpus:
    source = MarkovSource(config.markov_vocab, config.markov_order,
                          config.markov_concentration, seed=config.corpus_seed)
    tokens = source.sample(config.markov_tokens, seed=config.corpus_seed)  # (N,)
    train, val = split_tokens(tokens, config.val_fraction)
    digest = hashlib.sha256(tokens.astype("<i8").tobytes()).hexdigest()
    _verify(digest, config, "markov corpus")
    h = source.entropy_rate()
    desc = (f"markov V={source.vocab_size} order={source.order} "
            f"concentration={config.markov_concentration} seed={config.corpus_seed} "
            f"{len(tokens)} tokens, entropy rate {h:.4f} nats")
    return Corpus(train=train, val=val, vocab_size=source.vocab_size,
                  tokenizer=source.tokenizer, entropy_rate=h, content_hash=digest,
                  description=desc, source=source)


def _token_folder(config: DataConfig):
    """The corpus's token folder (an "hf" dataset is tokenized into the cache once) and the
    content hash the run id records: the folder's files, or the dataset's."""
    if config.corpus == "tokens":
        folder = inspect_folder(config.path)
        return folder, folder.content_hash
    from .hf_datasets import tokenized_folder

    return tokenized_folder(config, load_tokenizer(config, None))


def load_tokenizer(config: DataConfig, folder) -> Any:
    """The tokenizer of a token corpus: tokenizer_path's file (checked against the hash the
    suite resolved), bytes, meta.pkl's characters, or the ids themselves."""
    if config.tokenizer == "hf":
        raw = Path(config.tokenizer_path).expanduser().read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if config.tokenizer_hash is not None and digest != config.tokenizer_hash:
            raise ValueError(f"{config.tokenizer_path}: tokenizer changed since the suite was "
                             f"resolved: load the suite again")
        return HFTokenizer.from_file(config.tokenizer_path)
    if config.tokenizer == "byte":
        return ByteTokenizer()
    itos = getattr(folder, "itos", None)  # nanoGPT's {id: character}, when it is one
    if isinstance(itos, dict) and set(itos) == set(range(folder.vocab_size)) and all(
            type(i) is int and isinstance(c, str) and len(c) == 1 for i, c in itos.items()) \
            and len(set(itos.values())) == len(itos):
        return CharTokenizer([itos[i] for i in range(folder.vocab_size)])
    return IdTokenizer(folder.vocab_size)


def _token_corpus(config: DataConfig) -> Corpus:
    folder, digest = _token_folder(config)
    _verify(digest, config, f"token folder {folder.folder}")
    tokenizer = load_tokenizer(config, folder)
    if tokenizer.vocab_size > folder.vocab_size:
        raise ValueError(f"{config.tokenizer_path or config.tokenizer}: the tokenizer has "
                         f"{tokenizer.vocab_size} tokens, the corpus only vocab_size "
                         f"{folder.vocab_size}")
    train = open_split(folder.folder, "train", folder.dtype)  # (N_train,) memory-mapped
    val = open_split(folder.folder, "val", folder.dtype)  # (N_val,)
    desc = (f"{config.corpus} {Path(config.path).name} V={folder.vocab_size} "
            f"{folder.n_train + folder.n_val} tokens ({folder.dtype}, memory-mapped), "
            f"tokenizer {tokenizer.name}, sha256 {digest[:12]}")
    return Corpus(train=train, val=val, vocab_size=folder.vocab_size, tokenizer=tokenizer,
                  entropy_rate=None, content_hash=digest, description=desc,
                  train_file=(folder.folder / "train.bin", folder.dtype))


def _verify(digest: str, config: DataConfig, what: str) -> None:
    """Refuse bytes other than those the run id was computed from (``content_hash``)."""
    if config.content_hash is not None and digest != config.content_hash:
        raise ValueError(f"{what}: corpus changed since the suite was resolved (sha256 "
                         f"{digest[:12]}, the suite resolved {config.content_hash[:12]}): "
                         f"load the suite again to get run ids for the new contents")


def _text_corpus(raw: bytes, what: str, config: DataConfig) -> Corpus:
    digest = hashlib.sha256(raw).hexdigest()
    _verify(digest, config, what)
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
    else:  # char: vocabulary of the whole text; hf: the file's
        tokenizer = (load_tokenizer(config, None) if config.tokenizer == "hf"
                     else get_tokenizer(config.tokenizer, text))
        tokens = tokenizer.encode(text)  # (N,)
        train, val = split_tokens(tokens, config.val_fraction)
    desc = (f"{what}, {config.tokenizer} V={tokenizer.vocab_size} "
            f"{len(train) + len(val)} tokens, sha256 {digest[:12]}")
    return Corpus(train=train, val=val, vocab_size=tokenizer.vocab_size, tokenizer=tokenizer,
                  entropy_rate=None, content_hash=digest, description=desc, source=None)


def _read_utf8(file: Path) -> bytes:
    raw = file.read_bytes()
    if b"\0" in raw:  # valid UTF-8, but no text corpus holds NUL: an image, an archive...
        raise ValueError(f"{file}: a binary file (NUL byte at {raw.index(0)}), not UTF-8 text")
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
