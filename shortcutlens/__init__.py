"""shortcutlens: self-supervised representation learning with an adversarial lens that removes
shortcuts (Minderer et al., ICML 2020), pluggable pretext tasks, scalable backbones and evaluations.

The registries' front doors::

    import shortcutlens
    backbone = shortcutlens.create_backbone("resnet", depth=50, version=2)
    lens = shortcutlens.create_lens("unet", in_chans=3, img_size=32)
    data = shortcutlens.create_dataset("digits")

Imports are lazy (PEP 562): ``import shortcutlens`` reads this file only, and each public name imports
its module on first use, so a command or a script pays only for what it touches. A new public name is
one line of ``PUBLIC`` (name -> the module that defines it); subpackages (``shortcutlens.eval``, ...)
load on first attribute access too.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access. One line per name.
PUBLIC: dict[str, str] = {
    "create_backbone": "shortcutlens.backbones",
    "list_backbones": "shortcutlens.backbones",
    "create_dataset": "shortcutlens.data",
    "list_datasets": "shortcutlens.data",
    "create_shortcut": "shortcutlens.data.shortcuts",
    "list_shortcuts": "shortcutlens.data.shortcuts",
    "create_lens": "shortcutlens.lens",
    "list_lenses": "shortcutlens.lens",
    "load": "shortcutlens.api",  # a trained run: backbone, lens, pretext head, config
}

__all__ = sorted(PUBLIC)  # noqa: PLE0605 (the table is the one list of public names)


def __getattr__(name: str) -> Any:
    module = PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a subpackage, as an eager import gave it
    else:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from shortcutlens.api import load  # noqa: F401
    from shortcutlens.backbones import create_backbone, list_backbones  # noqa: F401
    from shortcutlens.data import create_dataset, list_datasets  # noqa: F401
    from shortcutlens.data.shortcuts import create_shortcut, list_shortcuts  # noqa: F401
    from shortcutlens.lens import create_lens, list_lenses  # noqa: F401
