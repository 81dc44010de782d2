"""Deterministic data for lossbench: corpora, tokenizers, batches and teachers.

Everything here is a pure function of its arguments (configs, seeds, steps):
the corpus of a comparison is fixed by ``DataConfig`` alone, batch order by
(seed, step) alone, and the evaluation windows by the split alone.
"""

from lossbench.core.config import DataConfig

from .batches import eval_starts, get_batch, step_seed, train_batch_starts
from .corpora import Corpus, load_corpus, split_tokens
from .markov import MarkovSource
from .teachers import NGramTeacher, OracleTeacher, Teacher, build_teacher
from .tokenizers import ByteTokenizer, CharTokenizer, get_tokenizer

__all__ = [
    "ByteTokenizer", "CharTokenizer", "Corpus", "DataConfig", "MarkovSource",
    "NGramTeacher", "OracleTeacher", "Teacher", "build_teacher", "eval_starts",
    "get_batch", "get_tokenizer", "load_corpus", "split_tokens", "step_seed",
    "train_batch_starts",
]
