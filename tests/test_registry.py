"""Registries: unknown names fail with a ValueError that lists every valid name; third-party
builders arrive through entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import pretexts
import shortcutlens
from pretexts import PRETEXTS
from shortcutlens.registry import Registry

FRONT_DOORS = {
    "backbone": (shortcutlens.create_backbone, shortcutlens.list_backbones, "backbones"),
    "pretext": (pretexts.create_pretext, pretexts.list_pretexts, "pretexts"),
    "dataset": (shortcutlens.create_dataset, shortcutlens.list_datasets, "datasets"),
    "lens": (shortcutlens.create_lens, shortcutlens.list_lenses, "lenses"),
    "shortcut": (shortcutlens.create_shortcut, shortcutlens.list_shortcuts, "shortcuts"),
}

EXPECTED = {
    "backbone": {"resnet"},
    "pretext": {"rotation"},
    "dataset": {"digits", "fashion_mnist", "cifar10", "cifar100", "stl10", "imagefolder", "synthetic"},
    "lens": {"none", "unet"},
    "shortcut": {"none", "arrow"},
}


@pytest.mark.parametrize("kind", sorted(FRONT_DOORS))
def test_unknown_name_lists_every_valid_name(kind: str) -> None:
    create, names, plural = FRONT_DOORS[kind]
    valid = names()
    assert EXPECTED[kind] <= set(valid)
    assert valid == sorted(valid)
    with pytest.raises(ValueError) as info:
        create("no_such_thing")
    message = str(info.value)
    assert "'no_such_thing'" in message
    assert f"Valid {plural}: " + ", ".join(valid) in message


def test_register_and_create_pass_keyword_arguments() -> None:
    reg = Registry("widget")

    @reg.register("pair")
    def pair(*, a: int, b: int = 2) -> tuple[int, int]:
        return a, b

    assert reg.create("pair", a=1) == (1, 2)
    assert "pair" in reg and "other" not in reg
    with pytest.raises(ValueError, match=r"Unknown widget 'other'\. Valid widgets: pair"):
        reg.get("other")
    with pytest.raises(ValueError, match=r"Valid gizmos: \(none registered\)"):
        Registry("gizmo").get("x")


def test_registering_a_different_builder_under_a_taken_name_fails() -> None:
    reg = Registry("widget")
    reg.register("a")(int)
    reg.register("a")(int)  # the same builder again (a re-import) is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(float)


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution, as pip leaves it: a module plus a ``*.dist-info`` with entry points."""
    module = "shortcutlens_toy_plugin"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent('''
        import torch
        from pretexts.base import Pretext


        class Flip(Pretext):
            """Predict whether the image was flipped left-right: a 2-way toy pretext."""

            num_classes = 2

            def __init__(self, *, num_features):
                super().__init__()
                self.head = torch.nn.Linear(num_features, 2)

            def views(self, images):
                targets = torch.arange(2).repeat_interleave(images.shape[0])
                return torch.cat([images, images.flip(-1)]), targets

            def logits(self, features):
                return self.head(features)


        def build_widget(*, size=1):
            return ("widget", size)
    '''))
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""
        [shortcutlens.pretexts]
        flip = {module}:Flip
        rotation = {module}:build_widget

        [shortcutlens.test_widgets]
        toy = {module}:build_widget
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_registry_picks_up_entry_points(plugin_on_path: str) -> None:
    reg = Registry("widget", entry_point_group="shortcutlens.test_widgets")
    assert reg.names() == ["toy"]
    assert reg.create("toy", size=3) == ("widget", 3)
    # A registry without the group sees nothing of it.
    assert Registry("widget").names() == []


def test_third_party_pretext_through_the_real_group(plugin_on_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    # A fresh view of the pretext registry, so the entry points are scanned again with the plugin installed.
    monkeypatch.setattr(PRETEXTS, "_builders", dict(PRETEXTS._builders))
    monkeypatch.setattr(PRETEXTS, "_entry_points_loaded", False)
    assert "flip" in pretexts.list_pretexts()
    task = pretexts.create_pretext("flip", num_features=8)
    inputs, targets = task.views(torch.rand(3, 1, 4, 4))
    assert inputs.shape == (6, 1, 4, 4) and targets.tolist() == [0, 0, 0, 1, 1, 1]
    loss, metrics = task.loss(torch.randn(6, 8), targets)
    assert loss.ndim == 0 and "acc" in metrics
    # A plugin cannot shadow a built-in task.
    from pretexts.rotation import Rotation

    assert isinstance(pretexts.create_pretext("rotation", num_features=8), Rotation)
