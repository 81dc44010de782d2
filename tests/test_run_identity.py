"""A run id covers the loss's code: a plugin's source (file, module, entry point and its
package version) and a built-in's definition version, so an edited loss is never handed the
old loss's results (it was: "6 runs (6 already finished)" after editing a --plugin file)."""

import dataclasses
import sys
from pathlib import Path

import pytest

from lossbench.core.config import RunConfig
from lossbench.losses import get_loss, load_plugin, registry, unregister_loss
from lossbench.losses.identity import loss_identity
from lossbench.suite.load import load_suite
from lossbench.suite.preflight import resolve_losses
from lossbench.train.loop import train_run

from tests.helpers import lossbench_cli, tiny_toml

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = """
import torch.nn.functional as F
from lossbench.losses import register_loss

SCALE = {scale}

@register_loss("{name}", description="scaled CE", reference="test")
def {name}(logits, targets, *, ignore_index=-100):
    return SCALE * F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none",
                                   ignore_index=ignore_index)
"""


def forget(name: str) -> None:
    """Unregister a plugin loss and forget its module, so its file can be loaded again."""
    spec = registry._REGISTRY.get(name)
    unregister_loss(name)
    if spec is not None:
        sys.modules.pop(spec.origin, None)


def resolved_id(suite_path: Path, plugin: Path, name: str) -> str:
    load_plugin(str(plugin))
    try:
        return load_suite(suite_path).runs[0].run_id()
    finally:
        forget(name)


def write_suite(tmp_path: Path, losses: str, seeds=(0,), **sections) -> Path:
    path = tmp_path / "s.toml"
    name = losses.strip('[]"')
    path.write_text(tiny_toml("s", losses, seeds=seeds, **sections)
                    .replace("losses =", f'baseline = "{name}"\nlosses ='))
    return path


def test_editing_a_plugin_file_changes_its_run_ids(tmp_path):
    plugin = tmp_path / "scaled.py"
    suite = write_suite(tmp_path, '["scaled_ce"]')
    plugin.write_text(PLUGIN.format(name="scaled_ce", scale=1.0))
    before = resolved_id(suite, plugin, "scaled_ce")
    plugin.write_text(PLUGIN.format(name="scaled_ce", scale=2.0))  # a helper constant only
    after = resolved_id(suite, plugin, "scaled_ce")
    plugin.write_text(PLUGIN.format(name="scaled_ce", scale=1.0))
    assert before != after
    assert resolved_id(suite, plugin, "scaled_ce") == before  # the same code: the same runs


def test_a_plugin_module_run_id_hashes_its_file(tmp_path, monkeypatch):
    (tmp_path / "mod_losses.py").write_text(PLUGIN.format(name="module_ce", scale=1.0))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin("mod_losses")
    try:
        identity = loss_identity(get_loss("module_ce"))
        assert identity.startswith("sha256:") and len(identity) == 7 + 64
        config = resolve_losses(RunConfig(loss="module_ce"))
        assert config.loss_source == identity
        assert config.run_id() != RunConfig(loss="module_ce").run_id()
    finally:
        forget("module_ce")


def test_an_entry_point_run_id_names_its_distribution_and_version(tmp_path, monkeypatch):
    (tmp_path / "ep_scaled.py").write_text(PLUGIN.format(name="ep_scaled_ce", scale=1.0))
    ids = []
    for version in ("1.0", "1.1"):  # the same file: an upgrade of the package alone counts
        dist = tmp_path / f"scaledpkg-{version}.dist-info"
        for old in tmp_path.glob("scaledpkg-*.dist-info"):
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: scaledpkg\n"
                                       f"Version: {version}\n")
        (dist / "entry_points.txt").write_text("[lossbench.losses]\nscaled = ep_scaled\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
        try:
            spec = get_loss("ep_scaled_ce")
            assert spec.distribution == f"scaledpkg=={version}"
            assert loss_identity(spec).startswith(f"scaledpkg=={version} sha256:")
            ids.append(resolve_losses(RunConfig(loss="ep_scaled_ce")).run_id())
        finally:
            forget("ep_scaled_ce")
    assert ids[0] != ids[1]


def test_a_built_in_enters_the_run_id_only_once_its_version_is_bumped(monkeypatch):
    base = RunConfig(loss="focal")
    assert resolve_losses(base) == base  # version 1: today's ids (and results) stay valid
    spec = get_loss("focal")
    monkeypatch.setitem(registry._REGISTRY, "focal", dataclasses.replace(spec, version=2))
    bumped = resolve_losses(base)
    assert bumped.loss_source == "v2" and bumped.run_id() != base.run_id()


def test_a_fine_tuning_loss_is_covered_too(tmp_path):
    plugin = tmp_path / "ft.py"
    plugin.write_text(PLUGIN.format(name="ft_ce", scale=1.0))
    load_plugin(str(plugin))
    try:
        config = RunConfig()
        ft = dataclasses.replace(config.finetune, loss="ft_ce", steps=2)
        resolved = resolve_losses(dataclasses.replace(config, finetune=ft))
        assert resolved.finetune.loss_source == loss_identity(get_loss("ft_ce"))
        idle = resolve_losses(dataclasses.replace(config, finetune=dataclasses.replace(ft, steps=0)))
        assert idle.finetune.loss_source is None  # a phase of 0 steps never calls it
    finally:
        forget("ft_ce")


def test_a_worker_refuses_a_loss_whose_code_differs_from_the_resolved_one(tmp_path):
    """A pool or Dask worker loads the plugins itself: an edit between resolving the suite and
    the worker's import (or another package version on that worker) is refused, not filed
    under the other code's id."""
    plugin = tmp_path / "w.py"
    plugin.write_text(PLUGIN.format(name="worker_ce", scale=1.0))
    load_plugin(str(plugin))
    try:
        config = resolve_losses(RunConfig(loss="worker_ce", train=dataclasses.replace(
            RunConfig().train, steps=1)))
        stale = dataclasses.replace(config, loss_source="sha256:" + "0" * 64)
        with pytest.raises(ValueError, match="'worker_ce': its definition here .* is not the "
                                             "one this run was resolved with"):
            train_run(stale)
    finally:
        forget("worker_ce")


@pytest.mark.slow
def test_rerunning_after_editing_a_plugin_trains_the_new_loss(tmp_path):
    """The issue's case, end to end through `lossbench run --plugin` (and its pool workers)."""
    plugin = tmp_path / "edited.py"
    suite = write_suite(tmp_path, '["edited_ce"]', seeds=(0, 1), train={"steps": 3})
    plugin.write_text(PLUGIN.format(name="edited_ce", scale=1.0))

    def run() -> str:
        proc = lossbench_cli("run", suite, "--plugin", plugin, "--out", tmp_path / "out",
                             "--no-report", "--workers", "2", cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "(0 already finished)" in run()
    plugin.write_text(PLUGIN.format(name="edited_ce", scale=2.0))
    assert "(0 already finished)" in run()  # was "(2 already finished)": the old numbers
    plugin.write_text(PLUGIN.format(name="edited_ce", scale=1.0))
    assert "(2 already finished)" in run()  # the first code's result is still its own
