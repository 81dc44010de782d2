"""Character and byte tokenizers, vectorized with numpy.

``char`` is nanoGPT's shakespeare_char scheme: the vocabulary is the sorted set
of characters of the text it was fitted on. ``byte`` is the UTF-8 bytes (V=256),
which needs no fitting and can encode any text.

There is no BPE tokenizer: no well-kept BPE library (tiktoken, tokenizers,
sentencepiece) is installed in this environment and lossbench allows only
torch, numpy and scipy, so BPE is deliberately left out.

Encoding is vectorized: a str becomes an array of code points in one call
(``str.encode("utf-32-le")`` + ``np.frombuffer``) and a sorted lookup maps code
points to ids, so the 1.1M characters of tinyshakespeare encode in ~10 ms.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TOKENIZER_NAMES = ("char", "byte")


def _code_points(text: str) -> np.ndarray:
    """str -> its Unicode code points, (len(text),) uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _from_code_points(codes: np.ndarray) -> str:
    return np.ascontiguousarray(codes, dtype="<u4").tobytes().decode("utf-32-le")


def _as_id_array(ids: Sequence[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    """Any int sequence / array / tensor of ids -> int64 array, range-checked."""
    if hasattr(ids, "detach"):  # torch tensor, without importing torch here
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        bad = arr[(arr < 0) | (arr >= vocab_size)][0]
        raise ValueError(f"token id {int(bad)} out of range for vocab_size {vocab_size}")
    return arr


class CharTokenizer:
    """One token per character; ``chars[i]`` is the character of token i."""

    name = "char"

    def __init__(self, chars: str | Sequence[str]):
        chars = "".join(chars)
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError("CharTokenizer needs a non-empty string of distinct characters")
        self.chars = chars
        self._codes = _code_points(chars)  # (V,) code point of each token id
        # sorted view for searchsorted lookups; chars need not be in code-point order
        self._order = np.argsort(self._codes, kind="stable")  # (V,)
        self._sorted_codes = self._codes[self._order]  # (V,)

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        """Vocabulary = sorted(set(text)), exactly as nanoGPT's shakespeare_char."""
        if not text:
            raise ValueError("cannot fit a CharTokenizer on empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """str -> ids (len(text),) int64. Unknown characters raise ValueError."""
        codes = _code_points(text)  # (N,)
        pos = np.searchsorted(self._sorted_codes, codes)  # (N,) insertion points
        pos_clipped = np.minimum(pos, len(self._sorted_codes) - 1)
        known = self._sorted_codes[pos_clipped] == codes
        if not known.all():
            bad = chr(int(codes[~known][0]))
            raise ValueError(f"character {bad!r} is not in the tokenizer's vocabulary")
        return self._order[pos_clipped].astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = _as_id_array(ids, self.vocab_size)
        return _from_code_points(self._codes[arr])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
        return cls(d["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
    """UTF-8 bytes as tokens (V=256). Decoding replaces invalid UTF-8 sequences,
    which a model can produce by emitting bytes in an impossible order."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = _as_id_array(ids, self.vocab_size)
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ByteTokenizer":
        return cls()

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def get_tokenizer(name: str, text: str) -> CharTokenizer | ByteTokenizer:
    """Tokenizer ``name`` ("char" | "byte"), fitted on ``text`` where it needs fitting."""
    if name == "char":
        return CharTokenizer.fit(text)
    if name == "byte":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; expected one of {TOKENIZER_NAMES}")


def tokenizer_from_dict(d: dict[str, Any]) -> CharTokenizer | ByteTokenizer:
    """Inverse of ``to_dict`` for either tokenizer (dispatch on d["name"])."""
    name = d.get("name")
    if name == "char":
        return CharTokenizer.from_dict(d)
    if name == "byte":
        return ByteTokenizer.from_dict(d)
    raise ValueError(f"unknown tokenizer {name!r} in saved dict; expected one of "
                     f"{TOKENIZER_NAMES}")
