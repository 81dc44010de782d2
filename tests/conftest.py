import os

import pytest
import torch
from hypothesis import settings

import lossbench.checks  # noqa: F401  registers the "dev" and "ci" hypothesis profiles

# --doctest-modules (pyproject.toml) imports every module it collects: the plugin files in
# fixtures/ would register their losses into this process (list_losses() would then hand
# them to the property tests, and a later load_plugin would collide). Tests load them
# through load_plugin or a `--plugin` subprocess only.
collect_ignore = ["fixtures"]

# CI sets HYPOTHESIS_PROFILE=ci (more examples, derandomized); locally "dev" is quicker.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
# Tests use tiny tensors, where intra-op threads only add overhead.
torch.set_num_threads(1)


@pytest.fixture
def check(monkeypatch, capsys):
    """check(*args) -> (exit code, stdout, stderr) of `lossbench check ARGS`, in-process."""
    from lossbench import cli
    from lossbench.cli.check import check_cmd

    monkeypatch.setitem(cli.cli.commands, "check", check_cmd)

    def run(*args):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["check", *map(str, args)])
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err
    return run
