"""Tests for lossbench.data: tokenizers, the markov corpus, corpora, batches, teachers."""

import functools
import hashlib
import math
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lossbench.core.config import RunConfig
from lossbench.data import (
    ByteTokenizer,
    CharTokenizer,
    Corpus,
    DataConfig,
    MarkovSource,
    NGramTeacher,
    OracleTeacher,
    build_teacher,
    eval_starts,
    get_batch,
    get_tokenizer,
    load_corpus,
    train_batch_starts,
)
from lossbench.data.corpora import _read_stdlib
from lossbench.data.tokenizers import BpeTokenizer

SHAKESPEARE = Path(__file__).parents[2] / "shared/data/tinyshakespeare.txt"
# the shared tinyshakespeare copy sits beside the checkout, not in it: a bare clone skips these
# (pytest -ra lists each skip with this reason); the text-corpus tests on files written under
# tmp_path always run
needs_shakespeare = pytest.mark.skipif(
    not SHAKESPEARE.is_file(), reason=f"tinyshakespeare not found at {SHAKESPEARE} (it lives "
    f"beside the project, in ../shared/data)")


# ---- tokenizers -------------------------------------------------------------

def test_char_tokenizer_roundtrip_and_vocab():
    text = "hello, wörld! ünïcode ☃\nline two"
    tok = CharTokenizer.fit(text)
    assert tok.chars == "".join(sorted(set(text)))
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert ids.tolist() == [tok.chars.index(c) for c in text]  # slow reference
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text
    assert tok.decode(torch.from_numpy(ids)) == text
    with pytest.raises(ValueError, match="'Z'"):
        tok.encode("Z")


def test_char_tokenizer_unsorted_alphabet():
    tok = CharTokenizer("zaM")  # ids follow the given order, not code points
    assert tok.encode("aMz").tolist() == [1, 2, 0]
    assert tok.decode([0, 1, 2]) == "zaM"


def test_byte_tokenizer_roundtrip():
    text = "naïve café ☃"
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert tok.vocab_size == 256
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    with pytest.raises(ValueError, match="256"):
        tok.decode([256])


def test_tokenizer_names():
    text = "abcabd\n"
    for name in ("char", "byte", "bpe"):
        tok = get_tokenizer(name, text)
        assert tok.name == name and tok.to_dict()["name"] == name
        assert tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="'wordpiece'"):
        get_tokenizer("wordpiece", text)


@needs_shakespeare
def test_tinyshakespeare_char_vocab():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tok = CharTokenizer.fit(text)
    ids = tok.encode(text)
    assert tok.vocab_size == 65
    assert tok.decode(ids) == text


# ---- bpe ----------------------------------------------------------------------

def _words_text(n_words: int, seed: int = 0) -> str:
    """Pseudo-English from a fixed 300-word lexicon (made of syllables without the
    letters z, q, x, j, v), Zipf-ish word frequencies: plenty of pairs, and count
    ties, for BPE to merge."""
    syllables = ["th", "e", "an", "d", "o", "f", "in", "g", "er", "s", "t", "a", "ou",
                 "r", "l", "m", "ch", "ea", "w", "ing", "ñ", "é", "k", "b", "y", "p", "u"]
    lex_rng = np.random.default_rng(1234)  # the lexicon is the same for every seed
    lexicon = ["".join(lex_rng.choice(syllables, size=lex_rng.integers(1, 5)))
               for _ in range(300)]
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(lexicon) + 1)
    picks = rng.choice(len(lexicon), size=n_words, p=p / p.sum())
    ends = rng.choice([" ", " ", " ", ", ", ".\n", "\n\n"], size=n_words)
    return "".join(lexicon[w] + e for w, e in zip(picks, ends))


@functools.lru_cache(maxsize=None)
def _bpe(vocab: int = 400) -> BpeTokenizer:
    return BpeTokenizer.fit(_words_text(5_000), vocab)


def test_bpe_training_is_deterministic():
    text = _words_text(5_000)
    a, b = BpeTokenizer.fit(text, 400), BpeTokenizer.fit(text, 400)
    assert len(a.merges()) > 50 and a.merges() == b.merges()
    assert a.to_dict() == b.to_dict()
    assert np.array_equal(a.encode(text), b.encode(text))
    assert a.merges() != BpeTokenizer.fit(_words_text(5_000, seed=1), 400).merges()


@pytest.mark.slow
def test_bpe_training_is_deterministic_across_processes():
    code = ("import hashlib, sys; from lossbench.data.tokenizers import BpeTokenizer; "
            "t = BpeTokenizer.fit(sys.stdin.read(), 400); "
            "print(hashlib.sha256(t.to_dict()['tokenizer_json'].encode()).hexdigest())")
    text = _words_text(5_000)
    out = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True,
                         text=True, check=True, encoding="utf-8").stdout.strip()
    assert out == hashlib.sha256(_bpe(400).to_dict()["tokenizer_json"].encode()).hexdigest()


@pytest.mark.parametrize("text", [
    "", "hello world", "  leading and trailing  ", "tabs\tand\r\nCRLF\n\n\n",
    "naïve café ☃ 🎉 日本語のテキスト", "\x00\x01 control \x7f", "zzzz qqqq (never trained)",
    "ﬁ ligature, Å vs Å (NFC vs NFD: kept as is)",
])
def test_bpe_roundtrip_examples(text):
    tok = _bpe()
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert tok.decode(ids) == text
    assert tok.decode(torch.from_numpy(ids)) == text


@given(st.text(max_size=40))
def test_bpe_roundtrip_any_text(text):
    tok = _bpe()
    assert tok.decode(tok.encode(text)) == text


def test_bpe_vocab_size_respected():
    text = _words_text(5_000)
    for vocab in (257, 300, 400):
        tok = _bpe(vocab)
        ids = tok.encode(text)
        assert tok.vocab_size == vocab == 256 + len(tok.merges())
        assert ids.min() >= 0 and ids.max() < vocab
        assert len(ids) < len(text.encode("utf-8"))  # the merges compress
    small = BpeTokenizer.fit("abab", 10_000)  # runs out of pairs: fewer, never more
    assert 256 < small.vocab_size < 300
    with pytest.raises(ValueError, match="257"):
        small.decode([small.vocab_size])
    with pytest.raises(ValueError, match="vocab_size"):
        BpeTokenizer.fit(text, 256)


def test_bpe_missing_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError, match=r"pip install 'lossbench\[bpe\]'"):
        get_tokenizer("bpe", "some text")


def test_bpe_corpus_fits_train_text_only(tmp_path):
    train_text = _words_text(3_000)
    secret = " zqxjv" * 300  # letters that never occur in the training text
    f = tmp_path / "corpus.txt"
    f.write_text(train_text + secret, encoding="utf-8")
    val_fraction = len(secret) / (len(train_text) + len(secret))
    cfg = DataConfig(corpus="text", path=str(f), tokenizer="bpe", bpe_vocab=400,
                     val_fraction=val_fraction)
    c = load_corpus(cfg)
    cut = int((len(train_text) + len(secret)) * (1 - val_fraction))
    assert cut == len(train_text)
    direct = BpeTokenizer.fit(train_text, 400)
    assert c.tokenizer.to_dict() == direct.to_dict()  # fitted on exactly the train text
    assert c.train.tolist() == direct.encode(train_text).tolist()
    assert c.val.tolist() == direct.encode(secret).tolist()
    assert len(c.val) == len(secret)  # no merge of the val-only letters: one token per byte
    assert c.tokenizer.decode(torch.cat([c.train, c.val])) == train_text + secret
    assert c.vocab_size == c.tokenizer.vocab_size == 400 and "bpe V=400" in c.description
    # fitting on the whole text would have merged them (so the check above could fail)
    leaky = BpeTokenizer.fit(train_text + secret, 400)
    assert len(leaky.encode(secret)) < len(secret) / 2
    assert load_corpus(cfg).train.tolist() == c.train.tolist()  # deterministic


def test_bpe_vocab_is_in_the_run_id():
    assert RunConfig().run_id() != RunConfig(data=DataConfig(bpe_vocab=600)).run_id()


def test_markov_corpus_ignores_tokenizer():
    a = load_corpus(DataConfig(markov_tokens=2_000))
    b = load_corpus(DataConfig(markov_tokens=2_000, tokenizer="bpe", bpe_vocab=300))
    assert a.content_hash == b.content_hash and a.vocab_size == b.vocab_size == 16
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)


def test_stdlib_corpus_bpe():
    cfg = DataConfig(corpus="stdlib", stdlib_max_bytes=200_000, tokenizer="bpe",
                     bpe_vocab=400)
    c = load_corpus(cfg)
    raw, _ = _read_stdlib(cfg.stdlib_max_bytes)
    assert c.vocab_size == 400
    assert c.tokenizer.decode(torch.cat([c.train, c.val])) == raw.decode("utf-8")
    assert len(c.train) + len(c.val) < len(raw) / 1.5  # ~2 bytes/token at V=400
    assert c.content_hash == load_corpus(replace(cfg, tokenizer="char")).content_hash


@needs_shakespeare
def test_tinyshakespeare_bpe():
    c = load_corpus(DataConfig(corpus="text", path=str(SHAKESPEARE), tokenizer="bpe"))
    assert c.vocab_size == 512
    assert c.tokenizer.decode(torch.cat([c.train, c.val])) == SHAKESPEARE.read_text("utf-8")
    assert 0.08 < len(c.val) / (len(c.train) + len(c.val)) < 0.12


# ---- markov -------------------------------------------------------------------

def test_markov_table_is_seeded_and_positive():
    a, b, c = MarkovSource(seed=0), MarkovSource(seed=0), MarkovSource(seed=1)
    P = a.transition_table()
    assert P.shape == (16 ** 2, 16)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    assert P.min() > 0
    assert np.array_equal(P, b.transition_table())
    assert not np.array_equal(P, c.transition_table())


def test_two_state_chain_closed_form():
    a, b = 0.3, 0.1
    src = MarkovSource.from_table(np.array([[1 - a, a], [b, 1 - b]]), order=1)
    pi = src.stationary_distribution()
    np.testing.assert_allclose(pi, [b / (a + b), a / (a + b)], rtol=1e-12)

    def h(q):
        return -(q * math.log(q) + (1 - q) * math.log(1 - q))
    assert src.entropy_rate() == pytest.approx(pi[0] * h(a) + pi[1] * h(b), rel=1e-12)


def test_stationary_is_fixed_point_and_paths_agree():
    src = MarkovSource(vocab_size=6, order=3, concentration=0.5, seed=2)
    pi = src.stationary_distribution()
    T = src.context_transition_matrix()
    np.testing.assert_allclose(pi @ T, pi, atol=1e-14)
    assert pi.min() > 0 and pi.sum() == pytest.approx(1.0)
    # the power-iteration path used for large context spaces agrees with the exact solve
    np.testing.assert_allclose(src._stationary_power(), pi, atol=1e-12)


def test_entropy_rate_matches_empirical_estimate():
    src = MarkovSource(vocab_size=8, order=2, concentration=0.5, seed=3)
    x = src.sample(200_000, seed=0)
    V = 8
    ctx = x[:-2] * V + x[1:-1]  # id: most recent token is the low digit
    counts = np.bincount(ctx * V + x[2:], minlength=V ** 3).reshape(V ** 2, V).astype(float)
    n = counts.sum()
    cond = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    nz = counts > 0
    h_emp = -(counts[nz] / n * np.log(cond[nz])).sum()
    assert h_emp == pytest.approx(src.entropy_rate(), abs=0.02)
    np.testing.assert_allclose(counts.sum(axis=1) / n, src.stationary_distribution(), atol=0.01)
    # and the empirical transitions match the table where there is enough data
    P = src.transition_table()
    busy = counts.sum(axis=1) > 2000
    assert busy.sum() > 10
    np.testing.assert_allclose(cond[busy], P[busy], atol=0.05)


def test_sample_is_seeded_stationary_and_decodes():
    src = MarkovSource()
    x = src.sample(1000, seed=5)
    assert x.dtype == np.int64 and x.shape == (1000,)
    assert np.array_equal(x, src.sample(1000, seed=5))
    assert not np.array_equal(x, src.sample(1000, seed=6))
    assert 0 <= x.min() and x.max() < 16
    text = src.tokenizer.decode(x[:50])
    assert len(text) == 50 and set(text) <= set("abcdefghijklmnop")
    # the very first token already follows the stationary marginal
    two = MarkovSource.from_table(np.array([[0.9, 0.1], [0.4, 0.6]]), order=1)  # pi = (.8, .2)
    firsts = np.array([two.sample(1, seed=s)[0] for s in range(400)])
    assert (firsts == 0).mean() == pytest.approx(0.8, abs=0.08)


def test_sample_a_million_tokens():
    x = MarkovSource().sample(1_000_000, seed=0)
    assert len(x) == 1_000_000 and x.min() >= 0 and x.max() < MarkovSource().vocab_size


def test_markov_size_limits():
    with pytest.raises(ValueError, match="vocab_size"):
        MarkovSource(vocab_size=1)
    with pytest.raises(ValueError, match="order"):
        MarkovSource(vocab_size=64, order=5)


# ---- corpora ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    (dict(corpus="wiki"), "corpus"),
    (dict(tokenizer="wordpiece"), "tokenizer"),
    (dict(tokenizer="bpe", bpe_vocab=256), "bpe_vocab"),
    (dict(bpe_vocab=512.0), "bpe_vocab"),
    (dict(teacher="gpt4"), "teacher"),
    (dict(corpus="text", path="x.txt", teacher="oracle"), "teacher"),
    (dict(corpus="text"), "path"),
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(markov_vocab=1), "markov_vocab"),
    (dict(ngram_add_k=0.0), "ngram_add_k"),
    (dict(ngram_order=0), "ngram_order"),
    (dict(stdlib_max_bytes=0), "stdlib_max_bytes"),
    (dict(val_fraction=math.nan), "val_fraction"),
    (dict(markov_concentration=math.nan), "markov_concentration"),
    (dict(ngram_add_k=math.inf), "ngram_add_k"),
    (dict(markov_tokens=10**12), "markov_tokens"),  # past MARKOV_MAX_TOKENS
    (dict(markov_vocab=16, markov_order=8), "markov_order"),  # a 16**9-entry table
    (dict(content_hash=123), "content_hash"),
])
def test_data_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DataConfig(**kwargs)


def test_data_config_reports_every_bad_field_at_once():
    with pytest.raises(ValueError) as info:
        DataConfig(corpus="wiki", val_fraction=math.nan, markov_vocab=1)
    assert {k for k, _ in info.value.problems} == {"corpus", "val_fraction", "markov_vocab"}


def test_corpus_content_hash_is_checked(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcdefghij" * 10, encoding="utf-8")
    cfg = DataConfig(corpus="text", path=str(f))
    digest = load_corpus(cfg).content_hash
    assert load_corpus(replace(cfg, content_hash=digest)).content_hash == digest
    f.write_text("abcdefghij" * 11, encoding="utf-8")
    with pytest.raises(ValueError, match="corpus changed since the suite was resolved"):
        load_corpus(replace(cfg, content_hash=digest))
    markov = DataConfig(markov_tokens=1_000)
    with pytest.raises(ValueError, match="corpus changed"):
        load_corpus(replace(markov, content_hash="0" * 64))


@pytest.mark.parametrize("tokenizer", ["char", "byte", "bpe"])
def test_corpus_facts_agree_with_load_corpus(tmp_path, tokenizer):
    from lossbench.data.corpora import corpus_facts

    f = tmp_path / "t.txt"
    f.write_text(_words_text(2_000) + "é€", encoding="utf-8")  # multi-byte characters too
    cfg = DataConfig(corpus="text", path=str(f), tokenizer=tokenizer, bpe_vocab=300)
    facts, corpus = corpus_facts(cfg), load_corpus(cfg)
    assert facts.content_hash == corpus.content_hash
    if tokenizer == "bpe":  # bounds: merges only shrink the byte count
        assert facts.upper_bound and facts.vocab_size >= corpus.vocab_size
        assert facts.n_train >= len(corpus.train) and facts.n_val >= len(corpus.val)
    else:
        assert (facts.vocab_size, facts.n_train, facts.n_val) == \
            (corpus.vocab_size, len(corpus.train), len(corpus.val))
    markov = DataConfig(markov_tokens=5_000)
    facts, corpus = corpus_facts(markov), load_corpus(markov)
    assert facts.content_hash is None  # a markov corpus is a function of its config
    assert (facts.vocab_size, facts.n_train, facts.n_val) == \
        (corpus.vocab_size, len(corpus.train), len(corpus.val))


def test_markov_corpus_deterministic_split():
    cfg = DataConfig(markov_tokens=20_000)
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert a.content_hash == b.content_hash
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert len(a.train) == 18_000 and len(a.val) == 2_000
    full = a.source.sample(20_000, seed=cfg.corpus_seed)
    assert torch.equal(torch.cat([a.train, a.val]), torch.from_numpy(full))  # contiguous split
    assert a.train.dtype == torch.int64
    assert a.entropy_rate == pytest.approx(a.source.entropy_rate())
    assert "markov" in a.description and f"{a.entropy_rate:.4f}" in a.description
    other = load_corpus(replace(cfg, corpus_seed=1))
    assert other.content_hash != a.content_hash


def test_text_corpus_file_and_folder(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("abcdefghij" * 10, encoding="utf-8")
    c = load_corpus(DataConfig(corpus="text", path=str(f)))
    assert c.vocab_size == 10 and len(c.train) == 90 and len(c.val) == 10
    assert c.tokenizer.decode(torch.cat([c.train, c.val])) == "abcdefghij" * 10
    assert c.entropy_rate is None and c.source is None

    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "z.txt").write_text("ZZ", encoding="utf-8")
    (folder / "a.txt").write_text("AA", encoding="utf-8")
    (folder / "c.txt").write_text("CC", encoding="utf-8")
    c = load_corpus(DataConfig(corpus="text", path=str(folder), val_fraction=0.25))
    text = c.tokenizer.decode(torch.cat([c.train, c.val]))
    assert text == "AA\nZZ\nCC"  # sorted by relative path: a.txt, b/z.txt, c.txt
    b = load_corpus(DataConfig(corpus="text", path=str(folder), tokenizer="byte",
                               val_fraction=0.25))
    assert b.vocab_size == 256 and b.content_hash == c.content_hash


def test_text_corpus_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_corpus(DataConfig(corpus="text", path=str(missing)))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe not utf-8")
    with pytest.raises(ValueError, match="bad.txt"):
        load_corpus(DataConfig(corpus="text", path=str(bad)))
    binary = tmp_path / "image.png"
    binary.write_bytes(b"PNG\x00\x00\x00 valid UTF-8, yet binary")
    with pytest.raises(ValueError, match="binary"):
        load_corpus(DataConfig(corpus="text", path=str(binary)))


@needs_shakespeare
def test_tinyshakespeare_corpus():
    c = load_corpus(DataConfig(corpus="text", path=str(SHAKESPEARE)))
    assert c.vocab_size == 65
    assert (len(c.train), len(c.val)) == (1_003_854, 111_540)  # nanoGPT shakespeare_char


def test_stdlib_corpus_is_deterministic():
    cfg = DataConfig(corpus="stdlib", stdlib_max_bytes=200_000)
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert a.content_hash == b.content_hash and torch.equal(a.train, b.train)
    assert 0 < len(a.train) + len(a.val) <= 200_000
    assert platform.python_version() in a.description
    assert "def " in a.tokenizer.decode(a.train[:20_000])


# ---- batches ------------------------------------------------------------------

def test_train_batch_starts_depend_on_seed_and_step_only():
    a = train_batch_starts(10_000, 64, 12, seed=0, step=7)
    torch.manual_seed(123)
    torch.rand(100)
    b = train_batch_starts(10_000, 64, 12, seed=0, step=7)
    assert torch.equal(a, b)
    assert a.shape == (12,) and a.dtype == torch.int64
    assert not torch.equal(a, train_batch_starts(10_000, 64, 12, seed=0, step=8))
    assert not torch.equal(a, train_batch_starts(10_000, 64, 12, seed=1, step=7))


def test_train_batch_starts_range_and_no_global_rng():
    state = torch.random.get_rng_state()
    s = train_batch_starts(67, 64, 1000, seed=0, step=0)  # starts in {0, 1, 2}
    assert torch.equal(state, torch.random.get_rng_state())
    assert set(s.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError):
        train_batch_starts(64, 64, 1, seed=0, step=0)


def test_get_batch_matches_loop():
    data = torch.arange(100) * 3
    starts = torch.tensor([0, 5, 91])
    x, y = get_batch(data, starts, block_size=8)
    assert x.shape == y.shape == (3, 8)
    for b, s in enumerate(starts.tolist()):
        assert x[b].tolist() == data[s:s + 8].tolist()
        assert y[b].tolist() == data[s + 1:s + 9].tolist()
    with pytest.raises(ValueError):
        get_batch(data, torch.tensor([92]), block_size=8)


def test_eval_starts_fixed_spread_and_clamped():
    s = eval_starts(10_000, 64, 20)
    assert torch.equal(s, eval_starts(10_000, 64, 20))
    assert len(s) == 20 and s[0] == 0 and s[-1] == 10_000 - 64 - 1
    gaps = s.diff()
    assert gaps.min() >= 64 and gaps.max() - gaps.min() <= 1  # evenly spaced
    short = eval_starts(200, 64, 50)  # only 3 non-overlapping windows fit
    assert len(short) == 3 and short.diff().min() >= 64 and short[-1] == 200 - 65
    assert eval_starts(65, 64, 10).tolist() == [0]
    with pytest.raises(ValueError, match="too short"):
        eval_starts(64, 64, 10)


# ---- teachers -----------------------------------------------------------------

def test_ngram_hand_counted_bigram():
    t = NGramTeacher.fit(np.array([0, 1, 0, 1, 1]), vocab_size=2, order=2, add_k=1.0)
    # bigram counts: 0->1 twice; 1->0 once, 1->1 once
    expected = torch.tensor([[1 / 4, 3 / 4], [2 / 4, 2 / 4]])
    data = torch.tensor([1, 0, 0, 1])
    p = t.probs(data, torch.tensor([0]), block_size=3)  # contexts 1, 0, 0
    torch.testing.assert_close(p[0], expected[[1, 0, 0]])


def _slow_ngram_probs(train, data, start, block_size, V, order, k):
    """Reference: counts by Python loops; history min(p + 1, order - 1) tokens."""
    out = []
    for p in range(start, start + block_size):
        h = min(p + 1, order - 1)
        hist = tuple(data[p - h + 1:p + 1]) if h else ()
        counts = np.zeros(V)
        for t in range(h, len(train)):
            if tuple(train[t - h:t]) == hist:
                counts[train[t]] += 1
        out.append((counts + k) / (counts.sum() + k * V))
    return np.array(out)


def test_ngram_lookup_matches_slow_reference():
    rng = np.random.default_rng(0)
    V, order, k = 3, 3, 0.5
    train = rng.integers(0, V, 300)
    data = rng.integers(0, V, 40)
    t = NGramTeacher.fit(torch.from_numpy(train), V, order=order, add_k=k)
    starts = torch.tensor([0, 1, 7, 30])  # 0 and 1 exercise the short-history fallback
    p = t.probs(torch.from_numpy(data), starts, block_size=9)
    assert p.shape == (4, 9, V) and p.dtype == torch.float32
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 9))
    for b, s in enumerate(starts.tolist()):
        ref = _slow_ngram_probs(train, data, s, 9, V, order, k)
        np.testing.assert_allclose(p[b].numpy(), ref, rtol=1e-6)


def test_ngram_fits_train_split_only():
    corpus = load_corpus(DataConfig(markov_tokens=5_000))
    t1 = build_teacher(DataConfig(), corpus)
    scrambled = Corpus(**{**corpus.__dict__, "val": torch.zeros_like(corpus.val)})
    t2 = build_teacher(DataConfig(), scrambled)
    starts = torch.arange(0, 2_000, 97)  # every context the windows meet, on train text

    def probs(t):
        return t.probs(corpus.train, starts, block_size=32)

    assert torch.equal(probs(t1), probs(t2))
    t3 = NGramTeacher.fit(torch.cat([corpus.train, corpus.val]), corpus.vocab_size)
    assert not torch.equal(probs(t1), probs(t3))  # so the check above could fail


def test_ngram_table_size_limit():
    with pytest.raises(ValueError, match="ngram_order"):
        NGramTeacher.fit(np.zeros(10, dtype=np.int64), vocab_size=256, order=5)


def test_oracle_teacher_matches_transition_table():
    cfg = DataConfig(markov_vocab=5, markov_order=2, markov_tokens=2_000, teacher="oracle")
    corpus = load_corpus(cfg)
    teacher = build_teacher(cfg, corpus)
    assert isinstance(teacher, OracleTeacher)
    P, pi = corpus.source.transition_table(), corpus.source.stationary_distribution()
    data = corpus.train
    starts = torch.tensor([0, 3, 1000])
    probs = teacher.probs(data, starts, block_size=16)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 16))
    V = 5
    for b, s in enumerate(starts.tolist()):
        for t in range(16):
            p = s + t
            if p >= 1:  # full order-2 context: most recent token is the low digit
                want = P[int(data[p - 1]) * V + int(data[p])]
            else:  # only x0 known: stationary conditional, summing over the unseen x_{-1}
                rows = [c * V + int(data[0]) for c in range(V)]
                joint = pi[rows, None] * P[rows]
                want = joint.sum(0) / joint.sum()
            np.testing.assert_allclose(probs[b, t].numpy(), want, rtol=1e-5)


def test_oracle_cross_entropy_is_entropy_rate():
    cfg = DataConfig(markov_tokens=100_000, teacher="oracle")
    corpus = load_corpus(cfg)
    teacher = build_teacher(cfg, corpus)
    starts = eval_starts(len(corpus.val), 64, 1000)
    _, y = get_batch(corpus.val, starts, 64)
    p = teacher.probs(corpus.val, starts, 64).gather(-1, y[..., None]).squeeze(-1)
    assert -p.double().log().mean().item() == pytest.approx(corpus.entropy_rate, abs=0.05)


def test_build_teacher_kinds():
    corpus = load_corpus(DataConfig(markov_tokens=3_000))
    assert build_teacher(DataConfig(teacher="smoothed"), corpus) is None
    t = build_teacher(DataConfig(teacher="ngram", ngram_order=2), corpus)
    assert isinstance(t, NGramTeacher) and t.probs(corpus.train, torch.tensor([0]), 8).shape == (1, 8, 16)


@pytest.mark.parametrize("h", [0, 1, 2])
def test_ngram_counts_in_chunks_equal_one_pass(h, monkeypatch):
    """The teacher counts a corpus in chunks (bounded memory for a memory-mapped token
    folder): with chunks of 7 positions, every count equals a direct count, contexts that
    straddle a chunk boundary included, for the folder's own uint16 dtype too."""
    from lossbench.data import teachers

    rng = np.random.default_rng(h)
    tokens = rng.integers(0, 5, size=103).astype(np.uint16)
    expected = np.zeros((5 ** h, 5), dtype=np.int64)
    for t in range(h, len(tokens)):
        ctx = sum(int(tokens[t - 1 - j]) * 5 ** j for j in range(h))
        expected[ctx, tokens[t]] += 1
    monkeypatch.setattr(teachers, "NGRAM_CHUNK", 7)
    assert np.array_equal(teachers.ngram_counts(tokens, 5, h), expected)
    fitted = teachers.NGramTeacher.fit(torch.from_numpy(tokens.astype(np.int32)), 5, order=h + 1)
    monkeypatch.setattr(teachers, "NGRAM_CHUNK", 1 << 22)
    again = teachers.NGramTeacher.fit(torch.from_numpy(tokens.astype(np.int32)), 5, order=h + 1)
    assert torch.equal(fitted._flat, again._flat)
