"""shortcutlens: self-supervised representation learning with an adversarial lens that removes
shortcuts (Minderer et al., ICML 2020), pluggable pretext tasks, scalable backbones and evaluations.

The registries' front doors::

    import shortcutlens
    backbone = shortcutlens.create_backbone("resnet", depth=50, version=2)
    lens = shortcutlens.create_lens("unet", in_chans=3, img_size=32)
    data = shortcutlens.create_dataset("digits")
"""

from shortcutlens.backbones import create_backbone, list_backbones
from shortcutlens.data import create_dataset, list_datasets
from shortcutlens.data.shortcuts import create_shortcut, list_shortcuts
from shortcutlens.lens import create_lens, list_lenses
from shortcutlens.api import load  # noqa: F401  (a trained run: backbone, lens, pretext, config)

__version__ = "0.1.0"

__all__ = [
    "create_backbone", "create_dataset", "create_lens", "create_shortcut",
    "list_backbones", "list_datasets", "list_lenses", "list_shortcuts",
]
