"""Hugging Face ``transformers`` causal LMs, built offline from a config.

``hf_config = { model_type = "llama", hidden_size = 128, ... }`` is passed to
``AutoConfig.for_model``; ``hf_path`` names a local folder with a config.json (read with
``local_files_only``). Either way the vocabulary size is the corpus's, and the model is
built with ``AutoModelForCausalLM.from_config``: random weights from the torch RNG, which
lossbench.models seeds (weights come from ``init_from`` only). HF_HUB_OFFLINE is set
before ``transformers`` is imported: nothing is downloaded.
"""

from __future__ import annotations

import os

from lossbench.core.config import ModelConfig
from lossbench.core.extras import import_extra


def import_transformers():
    """``transformers`` in offline mode, or an ImportError naming the extra."""
    transformers = import_extra("transformers", 'arch "hf"', "hf",
                                offline=("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    transformers.logging.set_verbosity_error()  # no advice about training on stderr per run
    return transformers


def hf_config(m: ModelConfig, vocab_size: int):
    """The transformers config of ``m`` for ``vocab_size`` tokens (ValueError when its
    context is shorter than block_size)."""
    tf = import_transformers()
    if m.hf_path:
        path = os.path.expanduser(m.hf_path)
        if not os.path.exists(path):  # else transformers takes it for a Hub id ("gpt2")
            raise FileNotFoundError(f"no such file or folder: {m.hf_path} (a local folder with "
                                    f"a config.json; nothing is downloaded)")
        cfg = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    else:
        kw = dict(m.hf_config)
        model_type = kw.pop("model_type")
        kw.setdefault("max_position_embeddings", m.block_size)
        cfg = tf.AutoConfig.for_model(model_type, **kw)
    cfg.vocab_size = vocab_size
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if context is not None and context < m.block_size:
        raise ValueError(f"[model] block_size {m.block_size} is longer than the model's "
                         f"context ({context} positions)")
    return cfg


def build_hf(m: ModelConfig, vocab_size: int):
    tf = import_transformers()
    return tf.AutoModelForCausalLM.from_config(hf_config(m, vocab_size))
