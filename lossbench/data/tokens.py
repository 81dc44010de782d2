"""Token folders: a corpus that is already token ids, nanoGPT style.

    folder/train.bin   token ids, uint16 (nanoGPT's default) or uint32, native little-endian
    folder/val.bin     the validation split, same dtype
    folder/meta.json   {"vocab_size": 50304, "dtype": "uint16"}   (dtype optional)
      or meta.pkl      nanoGPT's pickle: {"vocab_size": 65, "itos": {...}, "stoi": {...}}

The splits are never read whole. A training batch reads its B windows of T + 1 tokens (at
the starts the sampler draws for any corpus, lossbench.data.batches) with one positioned
read each (:func:`read_windows`), so a multi-GB corpus trains in the memory of its batches.
The splits are also memory-mapped, read-only, as (N,) tensors, for what indexes them in
place: the fixed evaluation windows, the n-gram teacher, the split lengths.

meta.pkl is read by an unpickler that resolves no class or function at all: only the
pickle opcodes of plain dicts, lists, tuples, strings, numbers and booleans work, so a
crafted file cannot run code (it fails to load, naming the file).

The content hash (which goes into the run id) is a sha256 of every file, streamed once.
A sound hash of a GB file costs seconds (sha256 runs at ~1 GB/s), so it is cached under
``$LOSSBENCH_CACHE`` (default ~/.cache/lossbench) by (absolute path, size, mtime, inode
change time, inode): writing a file's bytes sets its ctime, which, unlike the mtime (cp -p,
rsync -a, tar x and touch -r restore it), no tool can set back, and then it is hashed again.
A hash of the size and mtime alone would name two different corpora alike after a copy
that keeps them; a partial hash (first/last MB) misses edits in the
middle. The same pass records the largest token id, so ids beyond the vocabulary are
refused before any run instead of failing inside an embedding lookup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import pickletools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.core.atomic import atomic_write_text

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
META_MAX_BYTES = 64 * 1024 * 1024  # a vocabulary table, not a corpus
_CHUNK = 16 * 1024 * 1024  # hashing reads this much at a time (a multiple of 4 bytes)


def cache_dir() -> Path:
    """Where hashes and tokenized datasets are kept: $LOSSBENCH_CACHE or ~/.cache/lossbench."""
    root = os.environ.get("LOSSBENCH_CACHE") or Path.home() / ".cache" / "lossbench"
    return Path(root).expanduser()


def file_digest(path: Path, dtype: str | None = None) -> tuple[str, int | None]:
    """(sha256 of the file's bytes, its largest ``dtype`` value or None), streamed once and
    cached by (absolute path, size, mtime, ctime, inode, dtype); see the module docstring."""
    path = Path(path).resolve()
    st = path.stat()
    # ctime (which no tool can set, unlike the mtime that cp -p, rsync -a, tar x and touch -r
    # carry over) and the inode: a rewrite keeping the size and the mtime is hashed again
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{dtype}"
    index = cache_dir() / "hashes.json"
    try:
        known = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), list) and len(known[key]) == 2:
        return known[key][0], known[key][1]
    h, top = hashlib.sha256(), None
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if dtype is not None and len(chunk) >= np.dtype(DTYPES[dtype]).itemsize:
                whole = len(chunk) - len(chunk) % np.dtype(DTYPES[dtype]).itemsize
                m = int(np.frombuffer(chunk[:whole], dtype=DTYPES[dtype]).max())
                top = m if top is None else max(top, m)
    digest = h.hexdigest()
    try:  # a best-effort cache: concurrent writers may each write their own version
        index.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[key] = [digest, top]
        atomic_write_text(index, json.dumps(known))
    except OSError:
        pass
    return digest, top


# Opcodes a meta.pkl may hold. Plain data, and those that need a class or function on the
# stack, which only find_class (refusing every name) could put there. Left out: EXT1/2/4
# (the C unpickler takes an extension it has met before from copyreg's cache without
# calling find_class), persistent ids and out-of-band buffers, and any future opcode.
_META_OPCODES = frozenset("""
    PROTO FRAME STOP MARK POP POP_MARK DUP PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET
    INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT NONE NEWTRUE NEWFALSE
    STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8
    EMPTY_LIST APPEND APPENDS LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
    EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET
    GLOBAL STACK_GLOBAL INST REDUCE BUILD OBJ NEWOBJ NEWOBJ_EX""".split())


class _DataOnly(pickle.Unpickler):
    """Unpickles builtin containers and scalars only: every class lookup is refused, and
    opcodes that reach objects another way are refused before anything is unpickled."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data)")

    @classmethod
    def loads(cls, raw: bytes) -> Any:
        for op, _, pos in pickletools.genops(raw):  # parses, runs nothing
            if op.name not in _META_OPCODES:
                raise pickle.UnpicklingError(f"refusing opcode {op.name} at byte {pos} "
                                             f"(only plain data)")
        return cls(io.BytesIO(raw)).load()


def read_meta(folder: Path) -> dict[str, Any]:
    """meta.json, else meta.pkl (plain data only), as a dict with an int vocab_size."""
    js, pkl = folder / "meta.json", folder / "meta.pkl"
    path = js if js.exists() else pkl
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no meta.json or meta.pkl (the vocabulary size)")
    if path.stat().st_size > META_MAX_BYTES:
        raise ValueError(f"{path}: larger than {META_MAX_BYTES // 2**20} MiB, not a meta file")
    raw = path.read_bytes()
    try:
        meta = json.loads(raw) if path is js else _DataOnly.loads(raw)
    except Exception as exc:  # any way a crafted or broken file fails: one line
        raise ValueError(f"{path}: unreadable ({type(exc).__name__}: {exc})"[:300]) from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a dict, got {type(meta).__name__}")
    v = meta.get("vocab_size")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{path}: vocab_size: expected a positive integer, got {v!r}")
    dtype = meta.get("dtype", "uint16" if v <= 2**16 else "uint32")
    if dtype not in DTYPES:
        raise ValueError(f"{path}: dtype: expected one of {tuple(DTYPES)}, got {dtype!r}")
    if v > np.iinfo(DTYPES[dtype]).max + 1:
        raise ValueError(f"{path}: vocab_size {v} does not fit {dtype}")
    return {**meta, "dtype": dtype, "_file": path.name, "_raw": raw}


@dataclass(frozen=True)
class TokenFolder:
    """What a token folder holds, read without mapping it."""

    folder: Path
    vocab_size: int
    dtype: str
    n_train: int
    n_val: int
    content_hash: str  # sha256 over the three files' names and digests
    itos: Any = None  # meta.pkl's id -> character table, when it has one


def inspect_folder(path: str | os.PathLike) -> TokenFolder:
    """Check a token folder (files, dtype, sizes, ids < vocab_size) and hash it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"token folder does not exist: {folder}")
    meta = read_meta(folder)
    item = np.dtype(DTYPES[meta["dtype"]]).itemsize
    h = hashlib.sha256(b"lossbench token folder v1\n")
    h.update(f"{meta['_file']} {hashlib.sha256(meta['_raw']).hexdigest()}\n".encode())
    counts = {}
    for split in ("train", "val"):
        file = folder / f"{split}.bin"
        if not file.is_file():
            raise FileNotFoundError(f"{folder}: no {split}.bin")
        size = file.stat().st_size
        if size % item:
            raise ValueError(f"{file}: {size} bytes is not a whole number of {meta['dtype']} "
                             f"tokens (is meta's dtype right?)")
        digest, top = file_digest(file, meta["dtype"])
        if top is not None and top >= meta["vocab_size"]:
            raise ValueError(f"{file}: token id {top} is not below vocab_size "
                             f"{meta['vocab_size']} ({meta['_file']})")
        h.update(f"{split}.bin {digest}\n".encode())
        counts[split] = size // item
    return TokenFolder(folder, meta["vocab_size"], meta["dtype"], counts["train"],
                       counts["val"], h.hexdigest(), meta.get("itos"))


def open_split(folder: Path, split: str, dtype: str) -> torch.Tensor:
    """``split``.bin as a (N,) uint16/uint32 tensor over a read-only memory map."""
    file = Path(folder) / f"{split}.bin"
    if file.stat().st_size == 0:
        return torch.zeros(0, dtype=torch.long)
    array = np.memmap(file, dtype=DTYPES[dtype], mode="r")
    with warnings.catch_warnings():  # torch warns that the array is not writable: by design
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)


def read_windows(file: Path, dtype: str, starts: torch.Tensor,
                 block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batches of a token file: the windows get_batch takes from the same tokens,
    x, y (B, T) int64, read with one positioned read each instead of through the long-lived
    map. Pages a map has touched stay in the process's resident set (the kernel maps whole
    page-cache folios per fault: ~1.5 MiB per random window here), so reading batches through
    it grows the RSS with every step -- by ~700 MiB over 50 steps of a 1 GiB file
    (benchmarks/token_memory.py); nanoGPT re-creates its memmap every batch for this reason."""
    np_dtype = np.dtype(DTYPES[dtype])
    n = Path(file).stat().st_size // np_dtype.itemsize
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) + block_size >= n):
        raise ValueError(f"window starts must lie in [0, {n - block_size - 1}] "
                         f"for {n} tokens and block_size {block_size}")
    out = np.empty((starts.numel(), block_size + 1), dtype=np_dtype)  # (B, T+1)
    with open(file, "rb", buffering=0) as f:
        for row, start in zip(out, starts.tolist()):
            if os.preadv(f.fileno(), [row], start * np_dtype.itemsize) != row.nbytes:
                raise ValueError(f"{file}: short read (the file changed during the run?)")
    windows = torch.from_numpy(out.astype(np.int64))
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T), (B, T)


def write_token_folder(folder: Path, train: np.ndarray, val: np.ndarray, vocab_size: int,
                       extra_meta: dict | None = None, durable: bool = False) -> None:
    """Write a token folder (tests, the HF-dataset cache): the dtype is the smallest that
    holds vocab_size ids. meta.json records each split's sha256 (:func:`folder_intact`);
    ``durable``: the files are on disk (fsync) before this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if vocab_size <= 2**16 else "uint32"
    digests = {}
    for name, ids in (("train.bin", train), ("val.bin", val)):
        array = np.ascontiguousarray(ids, dtype=DTYPES[dtype])  # no copy when it is already
        digests[name] = hashlib.sha256(array).hexdigest()  # the buffer, not a bytes copy
        with open(folder / name, "wb") as f:
            array.tofile(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    meta = {"vocab_size": int(vocab_size), "dtype": dtype, "sha256": digests,
            **(extra_meta or {})}
    with open(folder / "meta.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, sort_keys=True))
        if durable:
            f.flush()
            os.fsync(f.fileno())


def folder_intact(folder: Path) -> bool:
    """Do the splits of a folder :func:`write_token_folder` wrote still hold the bytes its
    meta.json records (hashes cached: cheap after the first look)?"""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        want = meta["sha256"]
        return all(file_digest(folder / name, meta["dtype"])[0] == want[name]
                   for name in ("train.bin", "val.bin"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
