"""A local Hugging Face ``datasets`` dataset as a corpus, tokenized once into a token folder.

``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(read with ``load_from_disk``; a DatasetDict gives ``split``), or local data files: one
.jsonl/.json/.csv/.parquet/.txt file or a folder of them (read with ``load_dataset`` of the
matching builder, as split ``split``). Nothing is downloaded: HF_HUB_OFFLINE and
HF_DATASETS_OFFLINE are set before ``datasets`` is imported (dataset scripts are not
supported: they are code, and recent ``datasets`` removed them).

The ``text_field`` of every record is encoded in order, documents separated by the
tokenizer's end-of-text token when it has one, and the ids split contiguously like every
corpus (the first 1 - val_fraction of the tokens train). The result is a token folder
(lossbench.data.tokens) under ``$LOSSBENCH_CACHE/tokens/<key>``, the key a hash of the
dataset's files, the tokenizer, the field, the split and val_fraction: a second run, or
a second process, maps the folder instead of tokenizing again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.core.extras import import_extra

from .tokens import cache_dir, file_digest, folder_intact, inspect_folder, write_token_folder

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet",
            ".txt": "text"}
_BATCH = 1000  # documents encoded per call


def import_datasets():
    """``datasets`` in offline mode, or an ImportError naming the extra."""
    return import_extra("datasets", 'corpus "hf"', "hf",
                        offline=("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted((p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix())


def dataset_hash(path: str) -> str:
    """sha256 over the dataset's files (relative names and contents, hashes cached)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset path does not exist: {root}")
    files = _files(root)
    if not files:
        raise ValueError(f"{root}: no (non-hidden) files")
    h = hashlib.sha256(b"lossbench hf dataset v1\n")
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        h.update(f"{rel} {file_digest(f)[0]}\n".encode())
    return h.hexdigest()


def load_texts(path: str, text_field: str, split: str):
    """The dataset's ``text_field`` column, as a ``datasets.Dataset`` of that one column."""
    datasets = import_datasets()
    root = Path(path).expanduser()
    if root.is_dir() and ((root / "dataset_dict.json").exists() or (root / "state.json").exists()):
        ds = datasets.load_from_disk(str(root))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{root}: no split {split!r} (it has {', '.join(ds)})")
            ds = ds[split]
    else:
        files = _files(root)
        kinds = {BUILDERS.get(f.suffix.lower()) for f in files}
        if None in kinds or len(kinds) != 1:
            raise ValueError(f"{root}: expected a save_to_disk folder, or files of one kind "
                             f"among {', '.join(BUILDERS)}")
        ds = datasets.load_dataset(kinds.pop(), data_files={split: [str(f) for f in files]},
                                   split=split, cache_dir=str(cache_dir() / "hf-datasets"))
    if text_field not in ds.column_names:
        raise ValueError(f"{root}: text_field {text_field!r} is not a column (columns: "
                         f"{', '.join(ds.column_names)})")
    return ds.select_columns([text_field])


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(texts)
    return [tokenizer.encode(t).tolist() for t in texts]


def _texts(values: list, start: int, config) -> list[str]:
    """A batch of the text column: strings, and None (a record without text: an empty
    document). Anything else (a number, a list, a table: usually the wrong text_field) is
    refused, naming the first such record, rather than tokenized as empty text."""
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{config.path}: record {start + i}: text_field "
                             f"{config.text_field!r} holds {type(value).__name__} "
                             f"{str(value)[:40]!r}, not text")
    return [v if v is not None else "" for v in values]


def tokenized_folder(config, tokenizer) -> tuple[Any, str]:
    """(TokenFolder of the tokenized dataset, the dataset's content hash); tokenizes into
    the cache on first use. A crash leaves only a temporary folder, never a half cache, and
    a cached folder whose files no longer hold the bytes its meta.json records (cut short,
    edited) is tokenized again."""
    digest = dataset_hash(config.path)
    tok_id = hashlib.sha256(repr(tokenizer.to_dict()).encode()).hexdigest()
    key = hashlib.sha256(f"{digest}|{tok_id}|{config.text_field}|{config.split}|"
                         f"{config.val_fraction!r}|v1".encode()).hexdigest()[:24]
    target = cache_dir() / "tokens" / key
    if target.exists() and not folder_intact(target):  # cut short, or edited: build again
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix=f".{key}-damaged-", dir=target.parent))
        try:
            os.replace(target, aside / "folder")  # atomic: a concurrent reader keeps its maps
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(aside, ignore_errors=True)
    if not (target / "meta.json").exists():
        ds = load_texts(config.path, config.text_field, config.split)
        eos = tokenizer.eos_id() if hasattr(tokenizer, "eos_id") else None
        parts = []  # one id array per batch of documents
        for start in range(0, len(ds), _BATCH):
            texts = _texts(ds[start:start + _BATCH][config.text_field], start, config)
            for ids in _encode(tokenizer, texts):
                parts.append(np.asarray(ids + ([eos] if eos is not None else []), np.uint32))
        tokens = np.concatenate(parts) if parts else np.zeros(0, np.uint32)  # 4 B a token
        n_train = int(len(tokens) * (1.0 - config.val_fraction))
        if n_train < 1 or n_train >= len(tokens):
            raise ValueError(f"{config.path}: val_fraction={config.val_fraction} leaves an "
                             f"empty split of {len(tokens)} tokens")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        try:
            write_token_folder(tmp, tokens[:n_train], tokens[n_train:], tokenizer.vocab_size,
                               {"source": f"hf dataset sha256 {digest}"}, durable=True)
            os.replace(tmp, target)  # atomic; a concurrent writer's identical folder wins
        except OSError:
            if not (target / "meta.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return inspect_folder(target), digest
