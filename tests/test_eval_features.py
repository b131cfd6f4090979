"""Feature extraction and the feature cache: pooled features are what the backbone returns,
several layers come from one pass, views inject the shortcut, and a second evaluator (or a second
process) reads features from the cache instead of running the backbone."""

import pytest
import torch

from shortcutlens import create_backbone, create_dataset, create_lens, create_shortcut
from shortcutlens.data.loader import to_float
from shortcutlens.data.shortcuts import adapt_channels
from shortcutlens.eval import FeatureSource, create_evaluator, list_evaluators
from shortcutlens.eval.features import extract_layers, parse_layers, pool
from shortcutlens.eval.source import merge_data_spec


@pytest.fixture
def parts():
    torch.manual_seed(0)
    data = create_dataset("synthetic", num_classes=4, num_train=96, num_test=40)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=16)
    return data, backbone


def test_registry_lists_every_evaluator_and_rejects_unknown_names():
    assert {"linear", "fewshot", "knn", "episodes", "vtab1k", "shortcut_audit"} <= set(list_evaluators())
    with pytest.raises(ValueError, match="Valid evaluators: .*fewshot.*knn"):
        create_evaluator("nope")


def test_feature_evaluators_take_taps_and_sources_alike():
    """Every evaluator of frozen features takes ``layers`` and ``which`` (one name or a list) the same way."""
    for name in ("linear", "fewshot", "knn", "episodes", "vtab1k"):
        default, one = create_evaluator(name), create_evaluator(name, which="lensed", layers=["layer2"])
        assert (default.settings()["layers"], default.feature_sources()) == (["pooled"], ["raw"]), name
        assert (one.settings()["layers"], one.feature_sources()) == (["layer2"], ["lensed"]), name


def test_pooled_features_keep_their_contract(parts):
    """By default ``extract_layers`` gives the pooled features: ``backbone(x)`` in float32 on the CPU,
    in split order; ``concat`` puts the lensed ones beside them; ``lensed`` without a lens is refused."""
    data, backbone = parts
    cpu = torch.device("cpu")
    feats, labels = extract_layers(backbone, data.test, device=cpu, batch_size=16)
    feats = feats["pooled"]
    backbone.eval()
    with torch.no_grad():
        expected = backbone(to_float(data.test.images))
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(labels, data.test.labels)
    lens = create_lens("unet", in_chans=1, img_size=16, width=4)
    both = extract_layers(backbone, data.test, device=cpu, lens=lens, which="concat")[0]["pooled"]
    assert both.shape == (40, 2 * backbone.num_features)
    torch.testing.assert_close(both[:, : backbone.num_features], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs a lens"):
        extract_layers(backbone, data.test, device=cpu, which="lensed")


def test_layers_are_parsed_and_pooled(parts):
    _, backbone = parts
    assert parse_layers(None, backbone) == ["pooled"]
    assert parse_layers(["pooled", -1, "layer2", 2, 0], backbone) == ["pooled", "layer4", "layer2", "layer0"]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers([7], backbone)
    assert pool(torch.ones(2, 3, 4, 4)).shape == (2, 3) and pool(torch.ones(2, 5, 3)).shape == (2, 3)


def test_one_pass_taps_several_layers(parts):
    data, backbone = parts
    feats, _ = extract_layers(backbone, data.test, layers=["pooled", "layer1", "layer4"], device=torch.device("cpu"))
    backbone.eval()
    with torch.no_grad():
        maps = backbone.forward_intermediates(to_float(data.test.images), [1, 4])
    torch.testing.assert_close(feats["layer1"], maps[0].mean((2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats["layer4"], feats["pooled"], rtol=1e-4, atol=1e-5)  # GAP of the last map


def test_views_inject_the_shortcut(parts):
    data, backbone = parts
    source = FeatureSource(backbone=backbone, data=data, shortcut=create_shortcut("arrow"))
    x = to_float(data.test.images[:4])
    mark = source.shortcut.mask(16, 16)
    torch.testing.assert_close(source.view_transform("mark_rot0")(x), source.view_transform("shortcut")(x))
    blank = source.view_transform("blank_shortcut")(x)
    torch.testing.assert_close(blank, mark.expand_as(blank))
    rotated = source.view_transform("mark_rot1")(x)
    outside = (torch.rot90(mark, -1, dims=(-2, -1)) == 0).expand_as(x)
    assert torch.equal(rotated[outside], x[outside])  # the content stays upright; only the mark turned
    with pytest.raises(ValueError, match="Valid views"):
        source.view_transform("sideways")
    assert adapt_channels(torch.ones(2, 1, 4, 4), 3).shape == (2, 3, 4, 4)
    assert adapt_channels(torch.ones(2, 3, 4, 4), 1).shape == (2, 1, 4, 4)


def test_second_evaluator_and_second_process_read_from_the_cache(parts, tmp_path):
    data, backbone = parts
    calls = []
    backbone.register_forward_hook(lambda *_: calls.append(1))
    source = FeatureSource(backbone=backbone, data=data, cache_dir=tmp_path, batch_size=32)
    first = dict(create_evaluator("knn", layers=["pooled"]).run(source))
    assert calls and source.cache.misses == 2 and source.cache.hits == 0
    calls.clear()
    dict(create_evaluator("fewshot", shots=[1], seeds=1).run(source))  # same features, another evaluator
    assert not calls and source.cache.hits == 2
    again = FeatureSource(backbone=backbone, data=data, cache_dir=tmp_path)  # a new process: from disk
    assert dict(create_evaluator("knn", layers=["pooled"]).run(again)) == first
    assert not calls and again.cache.hits == 2 and again.cache.misses == 0
    assert len(list(tmp_path.glob("*.pt"))) == 2
    # Only the missing layer is extracted; other weights never hit.
    source.features("test", layers=["pooled", 1])
    assert source.cache.misses == 3
    with torch.no_grad():
        next(backbone.parameters()).add_(1.0)
    changed = FeatureSource(backbone=backbone, data=data, cache_dir=tmp_path)
    changed.features("test")
    assert changed.cache.hits == 0 and changed.cache.misses == 1


def test_data_override_merges_into_the_recorded_spec():
    recorded = {"name": "fashion_mnist", "root": "/old", "image_size": 32}
    assert merge_data_spec(recorded, None) == recorded
    assert merge_data_spec(recorded, {"root": "/new", "name": None}) == {"name": "fashion_mnist", "root": "/new",
                                                                          "image_size": 32}
    assert merge_data_spec(recorded, {"name": "digits"}) == {"name": "digits", "image_size": 32}
