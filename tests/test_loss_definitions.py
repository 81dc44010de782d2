"""Every built-in loss's definition is pinned to its version: a change to its code (or to a
helper, constant or hyperparameter default it uses) fails here until its version is bumped.

The version is what a run id records (lossbench.losses.identity): version 1 adds nothing
to the id, so results written before versions existed stay valid; from 2 on the id changes,
so results of the old code are never reused for the new. To update after a change:

- the change can alter a number the loss gives: bump ``version=`` in its
  ``register_loss(...)`` and record the new digest and version below (the fixture);
- it cannot (a rename, a refactor that computes the same floats): record the new digest
  under the same version, and say why in the commit.
"""

import json
import platform
from pathlib import Path

import pytest

from lossbench.losses import list_losses
from lossbench.losses.identity import definition_digest, is_builtin

PINNED = json.loads((Path(__file__).parent / "fixtures" / "loss_definitions.json").read_text())
BUILTINS = {s.name: s for s in list_losses() if is_builtin(s)}


def test_every_built_in_loss_is_pinned():
    assert sorted(BUILTINS) == sorted(PINNED["losses"]), \
        "a built-in loss was added or removed: record it in tests/fixtures/loss_definitions.json"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_a_changed_definition_has_a_new_version(name):
    if name not in PINNED["losses"]:
        pytest.skip("not pinned yet (see the test above)")
    if tuple(platform.python_version_tuple()[:2]) != tuple(PINNED["python"].split(".")[:2]):
        pytest.skip(f"digests are of ast.unparse output: pinned on Python {PINNED['python']}")
    spec, pinned = BUILTINS[name], PINNED["losses"][name]
    digest = definition_digest(spec)
    if digest != pinned["digest"]:
        assert spec.version > pinned["version"], (
            f"{name}: its definition changed (digest {digest}) but its version is still "
            f"{spec.version}: bump version= in its register_loss if a number can change, "
            f"then record digest and version in tests/fixtures/loss_definitions.json "
            f"(see this test's docstring)")
        pytest.fail(f"{name}: version {spec.version} with digest {digest}: record them in "
                    f"tests/fixtures/loss_definitions.json")
    assert spec.version == pinned["version"], f"{name}: version changed without a new digest"


def test_the_digest_sees_helpers_constants_and_defaults(monkeypatch):
    from lossbench.losses import _common, _fused, registry

    focal = BUILTINS["focal"]
    base = definition_digest(focal)
    monkeypatch.setattr(_common, "_NEAR_ONE", 0.8)  # a constant of a helper it calls
    assert definition_digest(focal) != base
    monkeypatch.undo()
    import dataclasses

    hp = dict(focal.hparams)
    hp["gamma"] = dataclasses.replace(hp["gamma"], default=3.0)
    monkeypatch.setitem(registry._REGISTRY, "focal", dataclasses.replace(focal, hparams=hp))
    assert definition_digest(registry._REGISTRY["focal"]) != base
    monkeypatch.undo()
    # kl's fused kernel lives in another module: its block size is part of kl's definition
    kl = BUILTINS["kl"]
    before = definition_digest(kl)
    monkeypatch.setattr(_fused, "_BLOCK_ELEMENTS", 1 << 10)
    assert definition_digest(kl) != before


def test_comments_docstrings_and_formatting_are_not_a_definition(tmp_path, monkeypatch):
    import importlib

    from lossbench.losses.identity import _normalized_source

    (tmp_path / "plain_a.py").write_text("def f(x):\n    return x * 2\n")
    (tmp_path / "plain_b.py").write_text(
        '@decorated\ndef f(x):  # why\n    """Doc."""\n    return (x *\n            2)\n'
        .replace("@decorated\n", ""))
    (tmp_path / "plain_c.py").write_text("def f(x):\n    return x * 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b, c = (_normalized_source(importlib.import_module(m).f)
               for m in ("plain_a", "plain_b", "plain_c"))
    assert a == b != c
