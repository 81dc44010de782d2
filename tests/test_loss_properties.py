"""Every registered loss against every property it claims: new losses are tested for free."""

import inspect
import os

import pytest

from lossbench.checks import run_property
from lossbench.losses import get_loss, list_losses

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
CASES = [(spec.name, prop) for spec in list_losses() for prop in sorted(spec.properties)]


@pytest.mark.parametrize("name,prop", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_loss_property(name, prop):
    result = run_property(get_loss(name), prop, profile=PROFILE)
    assert result.passed, f"{result.message}\n{result.counterexample}"


def test_registry_has_the_required_losses():
    required = {"cross_entropy", "label_smoothing", "focal", "poly1", "z_loss", "confidence_penalty",
                "mse", "mse_logits", "kl", "reverse_kl", "hinge", "squared_hinge", "unlikelihood",
                "sequence_unlikelihood"}
    assert required <= {s.name for s in list_losses()}


BUILTIN = [spec for spec in list_losses() if spec.origin.startswith("lossbench.losses.")]


@pytest.mark.parametrize("spec", BUILTIN, ids=[spec.name for spec in BUILTIN])
def test_builtin_loss_docstring_documents_its_spec(spec):
    """Built-in losses carry optax-style docs: arguments, return, a doctest, and the same
    reference as the registry (which `lossbench losses` prints)."""
    doc = inspect.getdoc(spec.fn)
    for section in ("Args:", "Returns:", "References:", "Examples:", ">>> "):
        assert section in doc, f"{spec.name}: no {section!r}"
    for arg in ("logits", "targets", "ignore_index", *spec.hparams, *spec.extra_inputs):
        assert f"\n    {arg}: " in doc, f"{spec.name}: argument {arg!r} is not documented"
    assert " ".join(spec.reference.split()) in " ".join(doc.split()), spec.name
