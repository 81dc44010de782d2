"""What a run stores: what one training step records (written by training, stored by the
results store) and the files of a run's folder.

Kept apart from both so the store (and the report above it) need not import
training, and the two cannot drift apart.
"""

STEP_METRICS = ("train_loss", "train_ce", "grad_norm", "clipped", "lr", "tokens", "wall_s")
STEP_FIELDS = ("step", *STEP_METRICS)  # one list per field in a run's ``steps``

TABLES_LOCK = ".tables.lock"  # held while an experiment's tables or records are written

# The files of one run's folder, DIR/runs/<run_id>/ (lossbench.store.runs.run_dir): named here only (the store writes and
# reads them, training writes its checkpoint and weights, status and reports read them).
CONFIG = "config.json"  # the run's resolved config, written before it starts
RESULT = "result.json"  # steps, evals and summary (and the config); written last, atomically
DONE = "DONE"  # completion marker, the status inside; written after result.json
ATTEMPTS = "attempts.jsonl"  # every attempt's start and end (status, error, host, pid)
METRICS = "metrics.jsonl"  # its evaluations as they happen (lossbench.store.metrics_log)
CHECKPOINT = "checkpoint.pt"  # while running (removed when finished; kept for a retry)
WEIGHTS = "model.pt"  # the final weights, with [train] save_weights
TRACEBACK = "traceback.txt"  # for failed runs (the latest attempt's)
LOCK = ".lock"  # held while a process trains the run (flock)

