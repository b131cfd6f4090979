"""The shortcut audit and the VTAB-1k protocol on tiny models and procedural data."""

import pytest
import torch

from shortcutlens import create_backbone, create_dataset, create_lens, create_shortcut
from shortcutlens.eval import FeatureSource
from shortcutlens.eval.shortcut_audit import ShortcutAuditEvaluator
from shortcutlens.eval.vtab1k import VTAB1kEvaluator, vtab_subsets


@pytest.fixture
def source():
    from pretexts import create_pretext

    torch.manual_seed(0)
    data = create_dataset("synthetic", num_classes=4, num_train=160, num_test=64)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=16)
    return FeatureSource(backbone=backbone, data=data, lens=create_lens("unet", in_chans=1, img_size=16, width=4),
                         pretext=create_pretext("rotation", num_features=backbone.num_features),
                         shortcut=create_shortcut("arrow", size=0.4), batch_size=64)


def test_audit_reports_all_three_measurements_with_and_without_the_lens(source):
    metrics = dict(ShortcutAuditEvaluator(max_images=48, probe_max_iter=60).run(source))
    assert metrics["shortcut_audit/pretext/chance"] == 0.25
    for which in ("raw", "lensed"):
        for view in ("blank_shortcut", "shortcut", "clean"):
            assert 0.0 <= metrics[f"shortcut_audit/pretext/{which}/{view}/acc"] <= 1.0
        clean = metrics[f"shortcut_audit/probe/{which}/pooled/clean_top1"]
        marked = metrics[f"shortcut_audit/probe/{which}/pooled/shortcut_top1"]
        assert metrics[f"shortcut_audit/probe/{which}/pooled/gap"] == pytest.approx(clean - marked)
        # A large bright mark is easy to see, even for a random network.
        assert metrics[f"shortcut_audit/decode/{which}/pooled/presence"] > 0.6
        assert 0.0 <= metrics[f"shortcut_audit/decode/{which}/pooled/orientation"] <= 1.0
    # The zero-initialised lens is the identity: with and without it agree.
    assert metrics["shortcut_audit/probe/lensed/pooled/gap"] == pytest.approx(metrics["shortcut_audit/probe/raw/pooled/gap"])


def test_audit_needs_a_shortcut(source):
    source.shortcut = None
    with pytest.raises(ValueError, match="needs a shortcut"):
        dict(ShortcutAuditEvaluator().run(source))


def test_vtab_subsets_are_disjoint_seeded_and_shrink():
    tr, va = vtab_subsets(torch.zeros(5000), train_size=800, val_size=200, seed=0)
    assert len(tr) == 800 and len(va) == 200 and not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(tr, vtab_subsets(torch.zeros(5000), train_size=800, val_size=200, seed=0)[0])
    tr, va = vtab_subsets(torch.zeros(100), train_size=800, val_size=200, seed=0)
    assert len(tr) == 80 and len(va) == 20


def test_vtab_runs_present_tasks_skips_missing_and_reports_the_mean(source, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SHORTCUTLENS_DATA", raising=False)
    ev = VTAB1kEvaluator(datasets=["synthetic", "cifar10"], root=str(tmp_path), l2_grid=[1e-3, 1e-1], max_iter=60)
    metrics = dict(ev.run(source))
    assert metrics["vtab1k/synthetic/available"] == 1.0 and metrics["vtab1k/cifar10/available"] == 0.0
    assert metrics["vtab1k/raw/pooled/mean/top1"] == metrics["vtab1k/raw/pooled/synthetic/top1"]
    table = ev.report(metrics)
    assert "| synthetic |" in table and "**mean**" in table and "cifar10" in table
