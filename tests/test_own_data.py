"""Bring your own data: token folders (nanoGPT's train.bin / val.bin / meta), a pretrained
tokenizer.json, and a local Hugging Face dataset, each end to end with the guarantees of
tests/test_training.py (identical batches, determinism, content hash in the run id)."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import Recorder, kill_at, records_text, same_weights, suite_file

from lossbench.core.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from lossbench.data.batches import get_batch, train_batch_starts
from lossbench.data.corpora import load_corpus
from lossbench.data.tokens import write_token_folder
from lossbench.store.tables import load
from lossbench.suite.load import SuiteError, load_suite
from lossbench.sweep.sweep import run_suite
from lossbench.train.loop import train_run

TINY_MODEL = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16)
TINY_TRAIN = TrainConfig(steps=6, batch_size=4, warmup_steps=2, checkpoint_every=3)
TINY_EVAL = EvalConfig(eval_every=3, val_windows=8, rep_prefixes=2, rep_prefix_len=4,
                       rep_continuation=8, samples=1)
TEXT = "the quick brown fox jumps over the lazy dog. " * 40 + "pack my box with five dozen jugs. " * 40


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Hashes and tokenized datasets go to this test's folder, not ~/.cache."""
    monkeypatch.setenv("LOSSBENCH_CACHE", str(tmp_path / "cache"))


def token_ids(n=6000, vocab=300, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.fixture
def token_folder(tmp_path):
    ids = token_ids()
    write_token_folder(tmp_path / "tok", ids[:5000], ids[5000:], 300)
    return tmp_path / "tok", ids


def resolved(data: DataConfig, model=TINY_MODEL) -> DataConfig:
    from lossbench.suite.preflight import resolve_corpus

    data, problems = resolve_corpus(data, model, TINY_TRAIN, device="cpu", needs_ngram=False)
    assert problems == []
    return data


def run_config(data, **changes):
    return dataclasses.replace(RunConfig(data=data, model=TINY_MODEL, train=TINY_TRAIN,
                                         eval=TINY_EVAL), **changes)


def test_token_folder_batches_are_the_samplers_windows_over_a_memory_map(token_folder):
    folder, ids = token_folder
    data = resolved(DataConfig(corpus="tokens", path=str(folder)))
    corpus = load_corpus(data)
    assert corpus.train.dtype == torch.uint16 and corpus.vocab_size == 300
    if os.path.exists("/proc/self/maps"):  # the tensor's bytes are the file's mapped pages
        ptr, maps = corpus.train.data_ptr(), open("/proc/self/maps").read().splitlines()
        mapped = [line.split()[0].split("-") for line in maps
                  if line.endswith(str((folder / "train.bin").resolve()))]
        assert any(int(lo, 16) <= ptr < int(hi, 16) for lo, hi in mapped), mapped
    seen = Recorder()
    train_run(run_config(data), observers=[seen])
    in_memory = torch.from_numpy(ids[:5000].astype(np.int64))
    for step, (x, y) in enumerate(seen.batches):
        starts = train_batch_starts(5000, 16, 4, 0, step)
        ex, ey = get_batch(in_memory, starts, 16)
        assert x.dtype == torch.long and torch.equal(x, ex) and torch.equal(y, ey)


def test_token_folder_content_goes_into_the_run_id_and_is_checked_at_load(token_folder):
    folder, ids = token_folder
    first = resolved(DataConfig(corpus="tokens", path=str(folder)))
    again = resolved(DataConfig(corpus="tokens", path=str(folder)))
    assert run_config(first).run_id() == run_config(again).run_id()
    changed = ids.copy()
    changed[100] = (changed[100] + 1) % 300
    write_token_folder(folder, changed[:5000], changed[5000:], 300)
    os.utime(folder / "train.bin", ns=(1, 1))  # a new mtime: hashed again, not from the cache
    other = resolved(DataConfig(corpus="tokens", path=str(folder)))
    assert run_config(other).run_id() != run_config(first).run_id()
    with pytest.raises(ValueError, match="changed since the suite was resolved"):
        load_corpus(first)


def test_token_folder_uint32_and_bad_folders_are_refused(tmp_path):
    ids = token_ids(vocab=70000)
    write_token_folder(tmp_path / "big", ids[:5000], ids[5000:], 70000)
    corpus = load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "big")))
    assert corpus.train.dtype == torch.uint32
    x, y = get_batch(corpus.train, torch.tensor([0, 4000]), 16)
    assert torch.equal(x[1], torch.from_numpy(ids[4000:4016])) and int(y.max()) >= 2**16 or \
        ids[:5000].max() < 2**16  # ids above uint16 come back intact
    small = token_ids(vocab=400)
    write_token_folder(tmp_path / "bad", small[:5001], small[5001:], 400)  # odd: 10002 bytes
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"vocab_size": 300}))
    with pytest.raises(ValueError, match="token id 399 is not below vocab_size 300"):
        load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "bad")))
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"vocab_size": 400, "dtype": "uint32"}))
    with pytest.raises(ValueError, match="not a whole number of uint32"):
        load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "bad")))


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_meta_pkl_is_plain_data_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ids = token_ids(vocab=5)
    write_token_folder(tmp_path / "char", ids[:5000], ids[5000:], 5)
    (tmp_path / "char" / "meta.json").unlink()
    chars = "abcde"
    meta = {"vocab_size": 5, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    (tmp_path / "char" / "meta.pkl").write_bytes(pickle.dumps(meta))  # nanoGPT's prepare.py
    corpus = load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "char")))
    assert corpus.tokenizer.decode([0, 4, 2]) == "aec"
    (tmp_path / "char" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 5, "x": Boom()}))
    with pytest.raises(ValueError, match=r"meta.pkl: unreadable .*refusing to load posix.system"):
        load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "char")))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("itos", [{0: "a", 1: "b", "x": "c"}, {0: "a", 1: "a", 2: "c"},
                                  {0: "a", 1: "bc", 2: "d"}])
def test_a_meta_pkl_table_that_is_not_a_character_table_shows_ids(tmp_path, itos):
    """nanoGPT's itos is {id: character}; any other table (mixed keys, repeated or longer
    strings) is not one: samples show ids, rather than every run failing to load."""
    ids = token_ids(vocab=3)
    write_token_folder(tmp_path / "t", ids[:5000], ids[5000:], 3)
    (tmp_path / "t" / "meta.json").unlink()
    (tmp_path / "t" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 3, "itos": itos}))
    corpus = load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "t")))
    assert corpus.tokenizer.decode([0, 2]) == "0 2"


def test_meta_pkl_refuses_extension_codes_that_bypass_find_class(tmp_path):
    """EXT1/2/4 name a copyreg extension: the C unpickler takes one it has seen before from
    its cache without calling find_class. With one registered (by any library in the
    process), a meta.pkl could still call a function: such opcodes are refused outright."""
    import copyreg

    ids = token_ids(vocab=5)
    write_token_folder(tmp_path / "ext", ids[:5000], ids[5000:], 5)
    (tmp_path / "ext" / "meta.json").unlink()
    # {"vocab_size": 5, "x": <extension 240>()}
    crafted = (b"\x80\x02}(X\n\x00\x00\x00vocab_sizeK\x05X\x01\x00\x00\x00x"
               b"\x82\xf0)Ru.")
    (tmp_path / "ext" / "meta.pkl").write_bytes(crafted)
    copyreg.add_extension("os", "getpid", 240)
    try:
        assert pickle.loads(crafted)["x"] == os.getpid()  # what it would do: call a function
        with pytest.raises(ValueError, match=r"meta.pkl: unreadable .*EXT1"):
            load_corpus(DataConfig(corpus="tokens", path=str(tmp_path / "ext")))
    finally:
        copyreg.remove_extension("os", "getpid", 240)


def train_tokenizer(path, vocab=300):
    """A byte-level BPE tokenizer.json (skips the calling test where `tokenizers` is absent)."""
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.BPE())  # GPT-2's scheme: byte-level, an end-of-text token
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=False)
    tok.train_from_iterator([TEXT], trainer=trainer)
    tok.save(str(path))
    return tok


def test_hf_tokenizer_file_gives_vocab_decoding_and_its_hash_goes_into_the_run_id(tmp_path):
    tok = train_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "corpus.txt").write_text(TEXT)
    data = resolved(DataConfig(corpus="text", path=str(tmp_path / "corpus.txt"), tokenizer="hf",
                               tokenizer_path=str(tmp_path / "tokenizer.json"), val_fraction=0.2))
    corpus = load_corpus(data)
    assert corpus.vocab_size == tok.get_vocab_size()
    assert corpus.tokenizer.decode(corpus.train[:20]) == TEXT[:len(corpus.tokenizer.decode(
        corpus.train[:20]))] and len(corpus.tokenizer.decode(corpus.train[:20])) > 20
    result = train_run(run_config(data))
    assert result.status == "done" and result.evals[-1]["samples"][0]["prefix"] in TEXT
    retrained = train_tokenizer(tmp_path / "tokenizer.json", vocab=280)
    assert retrained.get_vocab_size() != tok.get_vocab_size()
    other = resolved(dataclasses.replace(data, tokenizer_hash=None))
    assert run_config(other).run_id() != run_config(data).run_id()


@pytest.fixture
def saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    docs = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": docs, "id": list(range(len(docs)))})})
    ds.save_to_disk(str(tmp_path / "ds"))
    train_tokenizer(tmp_path / "tokenizer.json")
    return tmp_path / "ds", docs


def test_hf_dataset_suite_runs_end_to_end_tokenized_once(tmp_path, saved_dataset, monkeypatch):
    from lossbench.data import hf_datasets

    path, docs = saved_dataset
    reads = []
    monkeypatch.setattr(hf_datasets, "load_texts",
                        lambda *a, _f=hf_datasets.load_texts: reads.append(a) or _f(*a))
    data = {"corpus": "hf", "path": str(path), "tokenizer": "hf",
            "tokenizer_path": str(tmp_path / "tokenizer.json"), "val_fraction": 0.2}
    suite = load_suite(suite_file(tmp_path, data))
    cached = list((tmp_path / "cache" / "tokens").iterdir())
    assert len(cached) == 1  # tokenized while the suite was resolved
    stamp = (cached[0] / "train.bin").stat().st_mtime_ns
    assert len(reads) == 1
    outcome = run_suite(suite, tmp_path / "out", workers=1)
    assert outcome.exit_code == 0 and set(outcome.statuses.values()) == {"done"}
    corpus = load_corpus(suite.runs[0].data)
    assert (cached[0] / "train.bin").stat().st_mtime_ns == stamp and len(reads) == 1  # mapped
    eos = corpus.tokenizer.eos_id()
    assert eos is not None and int((corpus.train == eos).sum()) > 0  # documents separated
    summary, _ = load(tmp_path / "out")
    assert len(summary) == 2 and summary.final_val_ce.notna().all()
    a, b = train_run(suite.runs[0]), train_run(suite.runs[0])  # deterministic, like any corpus
    assert records_text(a) == records_text(b) and same_weights(a.model, b.model)
    # the same dataset as JSON-lines files: the same texts, the same tokens
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "part.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    as_files = load_suite(suite_file(tmp_path, {**data, "path": str(tmp_path / "jsonl")}, name="files"))
    assert torch.equal(load_corpus(as_files.runs[0].data).train, corpus.train)
    assert as_files.runs[0].run_id() != suite.runs[0].run_id()  # other files, other hash
    with pytest.raises(SuiteError, match=r"\[data\] path: .*text_field 'body' is not a column "
                                         r"\(columns: text, id\)"):
        load_suite(suite_file(tmp_path, {**data, "text_field": "body"}, name="bad"))


@pytest.mark.slow
def test_missing_extra_is_one_line_naming_the_pip_command(tmp_path, saved_dataset):
    path, _ = saved_dataset
    data = {"corpus": "hf", "path": str(path), "tokenizer": "hf",
            "tokenizer_path": str(tmp_path / "tokenizer.json")}
    suite = suite_file(tmp_path, data)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['datasets'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", str(suite), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'lossbench[hf]'" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_token_folder_run_is_deterministic_and_resumes(token_folder, tmp_path):
    folder, _ = token_folder
    config = run_config(resolved(DataConfig(corpus="tokens", path=str(folder))))
    a, b = train_run(config), train_run(config)
    assert records_text(a) == records_text(b) and same_weights(a.model, b.model)
    kill_at(config, tmp_path / "ck", 5)
    resumed = train_run(config, checkpoint_dir=tmp_path / "ck")
    assert records_text(resumed) == records_text(a) and same_weights(resumed.model, a.model)


@pytest.mark.slow
def test_training_batches_do_not_grow_the_resident_set(tmp_path):
    """Batches are positioned reads, not faults on the long-lived map: a map's touched pages
    stay resident (~1.5 MiB per random window), so 2400 windows of a 128 MiB file would
    keep most of it. Read them all; the process grows by far less than the file."""
    psutil = pytest.importorskip("psutil")
    from lossbench.train.state import RunState as _Run

    ids = np.arange(64 * 2**20, dtype=np.int64) % 300  # 128 MiB as uint16
    write_token_folder(tmp_path / "big", ids, ids[:5000], 300)
    run = _Run(run_config(DataConfig(corpus="tokens", path=str(tmp_path / "big"))))
    before = psutil.Process().memory_info().rss
    for step in range(200):
        x, _, _ = run.batch(step, 0)
    grown = psutil.Process().memory_info().rss - before
    assert grown < 16 * 2**20, f"resident set grew by {grown / 2**20:.0f} MiB"
    assert torch.equal(x[0], torch.arange(int(x[0, 0]), int(x[0, 0]) + 16) % 300)


def test_a_rewrite_that_keeps_size_and_mtime_is_hashed_again(token_folder):
    """cp -p, rsync -a, tar x and touch -r carry a file's mtime over: the cached hash must
    not outlive the bytes it was computed from (the key also has the inode change time,
    which no tool can set, and the inode)."""
    folder, ids = token_folder
    first = resolved(DataConfig(corpus="tokens", path=str(folder)))
    st = os.stat(folder / "train.bin")
    changed = ids.copy()
    changed[7] = (changed[7] + 1) % 300
    changed[:5000].astype(np.uint16).tofile(folder / "train.bin")  # same size
    os.utime(folder / "train.bin", ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    assert os.stat(folder / "train.bin").st_mtime_ns == st.st_mtime_ns
    again = resolved(DataConfig(corpus="tokens", path=str(folder)))
    assert again.content_hash != first.content_hash
    with pytest.raises(ValueError, match="changed since the suite was resolved"):
        load_corpus(first)


def test_a_damaged_tokenized_cache_is_tokenized_again(tmp_path, saved_dataset):
    """The cached token folder records its token counts: a file cut short (a crash before
    the data reached the disk, a full disk, a stray edit) is rebuilt, not trained on under
    the dataset's run id."""
    path, _ = saved_dataset
    data = DataConfig(corpus="hf", path=str(path), tokenizer="hf", val_fraction=0.2,
                      tokenizer_path=str(tmp_path / "tokenizer.json"))
    first = load_corpus(data)
    train = first.train.clone()
    (cached,) = (tmp_path / "cache" / "tokens").iterdir()
    raw = (cached / "train.bin").read_bytes()
    (cached / "train.bin").write_bytes(raw[:len(raw) // 2])
    again = load_corpus(data)
    assert torch.equal(again.train, train)


def test_the_ngram_teacher_over_a_token_folder_counts_in_the_memory_check(token_folder,
                                                                          monkeypatch):
    """A token folder trains in the memory of its batches, and the n-gram teacher (kl and
    other teacher losses) counts it in chunks of int64 arrays: the suite's memory check
    must see those, not 0 bytes."""
    from lossbench.suite import preflight

    folder, _ = token_folder
    data = DataConfig(corpus="tokens", path=str(folder), ngram_order=1)
    from lossbench.core.memory import memory_need

    model_only = sum(memory_need(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab=300,
                                 batch_size=4).values())
    monkeypatch.setattr(preflight, "machine_memory", lambda device="cpu": model_only + 1000)
    _, plain = preflight.resolve_corpus(data, TINY_MODEL, TINY_TRAIN, device="cpu",
                                        needs_ngram=False)
    _, teacher = preflight.resolve_corpus(data, TINY_MODEL, TINY_TRAIN, device="cpu",
                                          needs_ngram=True)
    assert len(teacher) == 1 and "needs ~" in teacher[0] and "corpus" in teacher[0], teacher
    assert not any("corpus" in p for p in plain), plain
