"""Backbones: feature extractors without a classification head.

Every backbone follows one interface (docs/architecture.md, "Contracts"):

- ``forward(x) -> (B, num_features)`` pooled features,
- ``forward_features(x)`` the last feature map ``(B, C, H, W)`` or tokens ``(B, N, C)``,
- ``forward_intermediates(x, layers)`` a list of intermediate outputs for multi-layer probes,
- attribute ``num_features``.

Size variants are rows of a table inside each backbone's module, chosen by keyword
(``create_backbone("vit", variant="S/16")``) or by a timm-style name that fixes those keywords
(``create_backbone("vit_small_patch16")``, ``"resnet50"``, ``"mixer_b16"``; a trailing ``_224`` sets
``img_size``). Both kinds of name are in ``list_backbones()``.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from shortcutlens.registry import Registry

BACKBONES = Registry("backbone", entry_point_group="shortcutlens.backbones")


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a backbone by registered name, e.g. ``create_backbone("resnet", depth=50, version=2)`` or
    ``create_backbone("resnetv2_50")``; ``"vit_base_patch16_224"`` is ``"vit_base_patch16"`` with
    ``img_size=224``."""
    sized = re.fullmatch(r"(.+)_(\d+)", name)
    if name not in BACKBONES and sized and sized.group(1) in ALIASES:
        name, size = sized.group(1), int(sized.group(2))
        if kwargs.setdefault("img_size", size) != size:
            raise ValueError(f"backbone '{sized.group(0)}' is for {size} px images but img_size={kwargs['img_size']} "
                             f"was given; use '{name}' with img_size")
    return BACKBONES.create(name, **kwargs)


def list_backbones() -> list[str]:
    return BACKBONES.names()


# Importing the modules registers their builders.
from shortcutlens.backbones import resnet  # noqa: F401

for _optional in ("vit", "mixer"):
    try:
        __import__(f"shortcutlens.backbones.{_optional}")
    except ModuleNotFoundError as err:  # only while the module does not exist yet
        if err.name != f"shortcutlens.backbones.{_optional}":
            raise


# timm-style names (Wightman, pytorch-image-models): each fixes the keywords its name spells and passes
# every other keyword through. The sizes and patches are the ones the papers and timm publish.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {}
for _depth in (18, 34, 50, 101, 152):
    ALIASES[f"resnet{_depth}"] = ("resnet", {"depth": _depth, "version": 1})
    ALIASES[f"resnetv2_{_depth}"] = ("resnet", {"depth": _depth, "version": 2})  # pre-activation
for _word, _size, _patches in (("tiny", "Ti", (16,)), ("small", "S", (8, 16, 32)), ("base", "B", (8, 16, 32)),
                               ("large", "L", (16, 32)), ("huge", "H", (14,)), ("giant", "g", (14,)),
                               ("gigantic", "G", (14,))):
    for _patch in _patches:
        ALIASES[f"vit_{_word}_patch{_patch}"] = ("vit", {"variant": f"{_size}/{_patch}"})
for _size, _patches in (("s", (16, 32)), ("b", (16, 32)), ("l", (16, 32)), ("h", (14,))):
    for _patch in _patches:
        ALIASES[f"mixer_{_size}{_patch}"] = ("mixer", {"variant": f"{_size.upper()}/{_patch}"})


def _alias_builder(alias: str, base: str, fixed: dict[str, Any]):
    def build(**kwargs: Any) -> nn.Module:
        clash = sorted(k for k in set(kwargs) & set(fixed) if kwargs[k] != fixed[k])
        if clash:
            raise ValueError(f"backbone '{alias}' fixes {', '.join(f'{k}={fixed[k]!r}' for k in clash)}; to set "
                             f"{', '.join(clash)} use create_backbone('{base}', ...)")
        return BACKBONES.create(base, **{**kwargs, **fixed})

    build.__doc__ = f"``create_backbone('{base}', {', '.join(f'{k}={v!r}' for k, v in fixed.items())})``."
    return build


for _alias, (_base, _fixed) in ALIASES.items():
    if _base in BACKBONES:
        BACKBONES.register(_alias)(_alias_builder(_alias, _base, _fixed))
