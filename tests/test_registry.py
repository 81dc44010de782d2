"""The registry contract: decorator, duplicates, signature checks, plugins, entry points."""

import sys
import textwrap

import pytest
import torch

from lossbench.losses import (
    HParam,
    PluginError,
    UnknownLossError,
    get_loss,
    list_losses,
    load_plugin,
    register_loss,
    registry,
    unregister_loss,
)


@pytest.fixture
def scratch_name():
    name = "test_scratch_loss"
    yield name
    unregister_loss(name)


def test_register_and_get(scratch_name):
    @register_loss(scratch_name, description="d", reference="r",
                   hparams={"w": HParam(0.5, 0.0, 1.0, neutral=0.0)}, properties=("nonnegative",))
    def fn(logits, targets, *, ignore_index=-100, w=0.5):
        return torch.zeros(targets.shape)

    spec = get_loss(scratch_name)
    assert spec.fn is fn and spec.defaults() == {"w": 0.5}
    assert {"nonnegative", "neutral_hparams_give_cross_entropy", "output_contract"} <= spec.properties
    assert scratch_name in {s.name for s in list_losses()}


def test_duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("cross_entropy", description="", reference="")(
            lambda logits, targets, *, ignore_index=-100: logits)


@pytest.mark.parametrize("source,match", [
    ("def f(logits, targets, *, ignore_index=-100, w=0.3): pass", "default of 'w'"),
    ("def f(logits, targets, *, ignore_index=-100): pass", "not a keyword-only"),
    ("def f(logits, targets, *, w=0.5): pass", "ignore_index"),
    ("def f(logits, *, ignore_index=-100, w=0.5): pass", "expected fn"),
    ("def f(logits, targets, *, ignore_index=-100, w=0.5, extra=1): pass", "'extra'"),
])
def test_signature_mismatch_is_rejected_at_registration(source, match, scratch_name):
    namespace = {}
    exec(source, namespace)
    with pytest.raises((TypeError, ValueError), match=match):
        register_loss(scratch_name, description="", reference="",
                      hparams={"w": HParam(0.5, 0.0, 1.0)})(namespace["f"])


def test_unknown_property_is_rejected(scratch_name):
    with pytest.raises(ValueError, match="unknown properties"):
        register_loss(scratch_name, description="", reference="", properties=("convex",))


def test_unknown_loss_suggests_close_names():
    with pytest.raises(UnknownLossError, match="did you mean label_smoothing"):
        get_loss("label_smothing")


def test_plugin_file_registers(tmp_path):
    plugin = tmp_path / "my_losses.py"
    plugin.write_text(textwrap.dedent("""
        import torch
        from lossbench.losses import register_loss

        @register_loss("plugin_file_loss", description="d", reference="r")
        def plugin_file_loss(logits, targets, *, ignore_index=-100):
            return torch.zeros(targets.shape)
    """))
    try:
        load_plugin(str(plugin))
        assert get_loss("plugin_file_loss").origin.startswith("lossbench_plugin_")
    finally:
        unregister_loss("plugin_file_loss")
    with pytest.raises(PluginError, match="no such file"):
        load_plugin(str(tmp_path / "missing.py"))


def install_entry_points(tmp_path, monkeypatch, lines: str) -> None:
    """A distribution in ``tmp_path`` declaring ``lines`` as lossbench.losses entry points,
    on sys.path, with the registry's entry-point state reset so it loads them."""
    dist = tmp_path / "plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lossbench.losses]\n" + lines)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_broken_entry_points", [])


def test_entry_point_plugins_load(tmp_path, monkeypatch):
    pkg = tmp_path / "ep_pkg.py"
    pkg.write_text(textwrap.dedent("""
        import torch
        from lossbench.losses import register_loss

        @register_loss("entry_point_loss", description="d", reference="r")
        def entry_point_loss(logits, targets, *, ignore_index=-100):
            return torch.zeros(targets.shape)
    """))
    install_entry_points(tmp_path, monkeypatch, "mine = ep_pkg\n")
    try:
        assert get_loss("entry_point_loss").name == "entry_point_loss"
    finally:
        unregister_loss("entry_point_loss")
        sys.modules.pop("ep_pkg", None)


def test_a_broken_entry_point_is_reported_once_and_the_others_still_load(tmp_path, monkeypatch):
    (tmp_path / "aa_broken.py").write_text("raise RuntimeError('plugin bug')\n")
    (tmp_path / "zz_good.py").write_text(textwrap.dedent("""
        import torch
        from lossbench.losses import register_loss

        @register_loss("after_broken_loss", description="d", reference="r")
        def after_broken_loss(logits, targets, *, ignore_index=-100):
            return torch.zeros(targets.shape)
    """))
    # the broken plugin is listed first, so a loader that stops at it misses the good one
    install_entry_points(tmp_path, monkeypatch, "broken = aa_broken\ngood = zz_good\n")
    try:
        with pytest.warns(RuntimeWarning, match="'broken'.*plugin bug") as caught:
            assert get_loss("cross_entropy").name == "cross_entropy"  # built-ins unhidden
            assert get_loss("after_broken_loss").name == "after_broken_loss"
            with pytest.raises(UnknownLossError, match="1 plugin\\(s\\) failed to load"):
                get_loss("no_such_loss")
        assert len([w for w in caught if "plugin bug" in str(w.message)]) == 1  # once
        assert registry.broken_entry_points() == [
            "entry point 'broken' (aa_broken) failed to load: plugin bug"]
    finally:
        unregister_loss("after_broken_loss")
        for name in ("aa_broken", "zz_good"):
            sys.modules.pop(name, None)
