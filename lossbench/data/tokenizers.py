"""Character, byte and (optional) byte-level BPE tokenizers.

``char`` is nanoGPT's shakespeare_char scheme: the vocabulary is the sorted set
of characters of the text it was fitted on. ``byte`` is the UTF-8 bytes (V=256),
which needs no fitting and can encode any text.

``bpe`` is a byte-level BPE (GPT-2 style: UTF-8 bytes as the base alphabet,
GPT-2's pre-tokenizer regex, merges learned on the text it is fitted on), built
with the Hugging Face ``tokenizers`` library, an optional dependency
(``pip install "lossbench[bpe]"``) imported only when a BPE tokenizer is made.
It is trained locally (nothing is downloaded), encodes any text (no unknown
tokens) and round-trips exactly. Training is deterministic: the 256 base tokens
are the whole byte alphabet, sorted, and merge ties are broken by token ids, so
the same text and vocabulary size give the same merges and ids in any process.
The corpus fits it on the training part of the text only (see corpora.py).

Encoding is vectorized: a str becomes an array of code points in one call
(``str.encode("utf-32-le")`` + ``np.frombuffer``) and a sorted lookup maps code
points to ids, with no Python loop over characters.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lossbench.core.config import BPE_MIN_VOCAB, TOKENIZER_NAMES
from lossbench.core.extras import import_extra


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


    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def _import_tokenizers(extra: str = "bpe"):
    """The optional ``tokenizers`` package, or an ImportError saying how to get it."""
    return import_extra("tokenizers", f'tokenizer "{extra}"', extra)


class BpeTokenizer:
    """Byte-level BPE (Hugging Face ``tokenizers``); ids are 0..vocab_size-1.

    ``fit(text, vocab_size)`` learns at most ``vocab_size - 256`` merges on
    ``text`` (fewer when it runs out of pairs seen at least twice: ``vocab_size`` is the
    actual size). No special tokens, no normalizer and no prefix space, so
    ``decode(encode(text)) == text`` for any str. Decoding ids that do not form
    valid UTF-8 (a model can sample such sequences) replaces the bad bytes.
    """

    name = "bpe"

    def __init__(self, hf_tokenizer: Any):
        self._tok = hf_tokenizer

    @classmethod
    def fit(cls, text: str, vocab_size: int = 512) -> "BpeTokenizer":
        if vocab_size < BPE_MIN_VOCAB:
            raise ValueError(f"BPE vocab_size must be >= {BPE_MIN_VOCAB} (256 byte tokens "
                             f"plus at least one merge), got {vocab_size}")
        if not text:
            raise ValueError("cannot fit a BpeTokenizer on empty text")
        tk = _import_tokenizers()
        byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = byte_level
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=2, show_progress=False,
            special_tokens=[], initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([text], trainer=trainer, length=1)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def merges(self) -> list[tuple[str, str]]:
        """The learned merges in order (byte-level strings), for inspection and tests."""
        import json
        merges = json.loads(self._tok.to_str())["model"]["merges"]
        return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]

    def encode(self, text: str) -> np.ndarray:
        """str -> ids (n_tokens,) int64."""
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets: ~2x faster
        fast = getattr(self._tok, "encode_batch_fast", None)
        enc = (fast([text], add_special_tokens=False)[0] if fast is not None
               else self._tok.encode(text, add_special_tokens=False))
        return np.asarray(enc.ids, dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = _as_id_array(ids, self.vocab_size)
        return self._tok.decode(arr.tolist(), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tokenizer_json": self._tok.to_str()}


    def __repr__(self) -> str:
        return f"BpeTokenizer(vocab_size={self.vocab_size})"


class HFTokenizer(BpeTokenizer):
    """Any pretrained Hugging Face ``tokenizers`` file (tokenizer.json): GPT-2, Llama, ...
    The vocabulary size is the file's, added tokens included; special tokens are neither
    added when encoding nor dropped when decoding (a sample shows what the model wrote)."""

    name = "hf"

    @classmethod
    def from_file(cls, path: str) -> "HFTokenizer":
        return cls(_import_tokenizers("hf").Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def eos_id(self) -> int | None:
        """The id of the end-of-text token, when the file has one of the usual names."""
        for name in ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"):
            if (i := self._tok.token_to_id(name)) is not None:
                return i
        return None


    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size})"


class IdTokenizer:
    """A token corpus without a tokenizer: samples show the ids themselves."""

    name = "ids"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return " ".join(map(str, _as_id_array(ids, self.vocab_size).tolist()))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size}

    def __repr__(self) -> str:
        return f"IdTokenizer(vocab_size={self.vocab_size})"


def get_tokenizer(name: str, text: str,
                  bpe_vocab: int = 512) -> CharTokenizer | ByteTokenizer | BpeTokenizer:
    """Tokenizer ``name`` ("char" | "byte" | "bpe"), fitted on ``text`` where it needs
    fitting; ``bpe_vocab`` is the BPE vocabulary size (ignored by the others)."""
    if name == "char":
        return CharTokenizer.fit(text)
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        return BpeTokenizer.fit(text, bpe_vocab)
    raise ValueError(f"unknown tokenizer {name!r}; expected one of {TOKENIZER_NAMES}")
