import os

import torch
from hypothesis import settings

import lossbench.checks  # noqa: F401  registers the "dev" and "ci" hypothesis profiles

# CI sets HYPOTHESIS_PROFILE=ci (more examples, derandomized); locally "dev" is quicker.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
# Tests use tiny tensors, where intra-op threads only add overhead.
torch.set_num_threads(1)
