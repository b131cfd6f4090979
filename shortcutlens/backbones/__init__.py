"""Backbones: feature extractors without a classification head.

Every backbone follows one interface (DESIGN.md, "Backbone interface"):

- ``forward(x) -> (B, num_features)`` pooled features,
- ``forward_features(x)`` the last feature map ``(B, C, H, W)`` or tokens ``(B, N, C)``,
- ``forward_intermediates(x, layers)`` a list of intermediate outputs for multi-layer probes,
- attribute ``num_features``.

Size variants are rows of a table inside each backbone's module.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from shortcutlens.registry import Registry

BACKBONES = Registry("backbone", entry_point_group="shortcutlens.backbones")


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a backbone by registered name, e.g. ``create_backbone("resnet", depth=50, version=2)``."""
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
