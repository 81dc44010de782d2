"""What one training step records: written by training, stored by the results store.

Kept apart from both so the store (and the report above it) need not import
training, and the two cannot drift apart.
"""

STEP_METRICS = ("train_loss", "train_ce", "grad_norm", "clipped", "lr", "tokens", "wall_s")
STEP_FIELDS = ("step", *STEP_METRICS)  # one list per field in a run's ``steps``

TABLES_LOCK = ".tables.lock"  # held while an experiment's tables or records are written
