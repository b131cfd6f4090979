"""Every seeded split in the library is pinned: folding the split helpers into one
(``shortcutlens.data.base.seeded_split``) must not move a single image between splits.

The hashes were recorded before the fold. A changed hash means a user's val/test split (or a probe's
training subset) silently changed, and with it every number compared against an earlier run.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch

from shortcutlens.build import train_subset
from shortcutlens.data import create_dataset
from shortcutlens.eval.base import carve_indices
from shortcutlens.eval.linear import LinearEvaluator
from shortcutlens.eval.shortcut_audit import ShortcutAuditEvaluator
from shortcutlens.eval.vtab1k import vtab_subsets


def digest(*tensors: torch.Tensor) -> str:
    """The first 16 hex digits of the sha256 of the tensors' bytes, in order (order matters)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


DATASET_SPLITS = {
    ("digits", 0): {"train": "8948dbc56df12c62", "val": "af129312f0e48535", "test": "36ae14eb70615c5d"},
    ("digits", 4): {"train": "7f8e6258896ac873", "val": "69c4a9ba639f40c5", "test": "36ae14eb70615c5d"},
    ("synthetic", 0): {"train": "e7b428f3e08b0e33", "val": "89f52a233724b41b", "test": "9a0b259a38b0dbc9"},
    ("synthetic", 3): {"train": "66b87ea39f659ada", "val": "b41acf21ffce420d", "test": "77604105c1d7f340"},
}
DATASET_KWARGS = {
    ("digits", 0): {"image_size": 8},
    ("digits", 4): {"image_size": 8},
    ("synthetic", 0): {},
    ("synthetic", 3): {"num_train": 300, "val_fraction": 0.25},
}


@pytest.mark.parametrize("key", list(DATASET_SPLITS))
def test_dataset_splits_unchanged(key):
    """digits: the fixed test carve and the seeded val carve; synthetic: the seeded val carve."""
    name, seed = key
    data = create_dataset(name, seed=seed, **DATASET_KWARGS[key])
    got = {s: digest(data.split(s).images, data.split(s).labels) for s in ("train", "val", "test")}
    assert got == DATASET_SPLITS[key]


def test_subset_helpers_unchanged():
    """``data.train_size``, the linear probe's held-out carve and ``max_train``, VTAB-1k's 800/200 (and
    its shrunk form), and the shortcut audit's image cap all pick the same indices as before, in the
    same order (VTAB's are unsorted)."""
    data = create_dataset("synthetic", seed=3)
    source = SimpleNamespace(split=lambda name: data.train, seed=3)
    assert digest(train_subset(data.train, 50, seed=5).images) == "6a8342575d4b6506"
    assert digest(*carve_indices(1000, 0.2, seed=7)) == "75403b1c503926e7"
    assert digest(*vtab_subsets(torch.zeros(5000), train_size=800, val_size=200, seed=0)) == "3d2c841373dfd39b"
    assert digest(*vtab_subsets(torch.zeros(100), train_size=800, val_size=200, seed=2)) == "ba6b6bd12ddfa498"
    assert digest(LinearEvaluator(max_train=50).pool(source).images) == "2415133aeb7e40fb"
    assert digest(ShortcutAuditEvaluator(max_images=50).subset(source, "test", salt=1).images) == "193e9b2257efd08a"
