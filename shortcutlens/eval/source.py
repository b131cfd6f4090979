"""What every evaluator reads: a frozen model, a labelled dataset and a shared feature cache.

``FeatureSource.from_checkpoint(path)`` rebuilds the backbone, pretext head, lens and shortcut from the
checkpoint's ``spec`` (``shortcutlens.build``), loads their weights and the dataset the run used (or
another one), and hands out features through a :class:`~shortcutlens.eval.cache.FeatureCache`::

    source = FeatureSource.from_checkpoint("runs/arrow_lens", device=torch.device("cpu"))
    feats, labels = source.features("test", layers=["pooled", -2], which="concat")
    feats["pooled"].shape    # (N, 2·num_features)

Image *views* say which pixels the model sees (the shortcut audit needs more than clean images):

- ``clean``: the images as they are;
- ``shortcut``: with the shortcut injected (what the pretext task saw in training);
- ``blank_shortcut``: content replaced by a constant, shortcut kept;
- ``mark_rot<k>``: upright content with the shortcut rotated by ``k``·90° against it,
  ``rot(-k)(shortcut(rot(k)(x)))``, so the shortcut's orientation varies independently of the content.

Channels are adapted to the backbone last (grayscale replicated to colour, colour averaged to gray).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shortcutlens.data.base import ImageData, Split
from shortcutlens.data.shortcuts import Shortcut, adapt_channels, channels_after
from shortcutlens.data.stream import concat_streamed, is_streamed
from shortcutlens.eval.cache import FeatureCache, fingerprint_modules, fingerprint_split, make_key
from shortcutlens.eval.features import extract_layers, parse_layers, probe_backbone

BASE_VIEWS = ("clean", "shortcut", "blank_shortcut")

log = logging.getLogger(__name__)


def describe(module: nn.Module | None) -> str:
    """A stable text of a small module's settings (its scalar and tuple attributes), for cache keys."""
    if module is None:
        return "none"
    fields = {k: v for k, v in sorted(vars(module).items())
              if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, tuple))}
    return f"{type(module).__name__}{fields}"


class FeatureSource:
    """Args:
    backbone: the frozen feature extractor (shared backbone interface).
    data: the labelled dataset (``train``/``val``/``test``).
    lens, pretext, shortcut: optional parts of the run (the audit needs the last two).
    in_chans: channels the backbone takes (default: the data's, after the shortcut).
    device: where features are computed; ``amp``: bfloat16 autocast (the cache keys on it).
    batch_size: images per forward pass.
    cache_dir: on-disk feature cache (``None``: in memory only).
    progress: tqdm bars on extraction.
    seed: the evaluation seed evaluators derive their randomness from.
    info: what to record about where the model came from (checkpoint path, step, spec).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        data: ImageData,
        lens: nn.Module | None = None,
        pretext: nn.Module | None = None,
        shortcut: Shortcut | None = None,
        in_chans: int | None = None,
        device: torch.device | str = "cpu",
        amp: bool = False,
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
        seed: int = 0,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.lens = lens.to(self.device).eval() if lens is not None else None
        self.pretext = pretext.to(self.device).eval() if pretext is not None else None
        self.shortcut = shortcut.to(self.device) if shortcut is not None else None
        self.data = data
        if in_chans is None:
            in_chans = channels_after(shortcut, data.channels)
        self.in_chans = in_chans
        self.amp, self.batch_size, self.progress, self.seed = amp, batch_size, progress, seed
        self.cache = FeatureCache(cache_dir)
        self.info = dict(info or {})
        self._fingerprints: dict[str, str] = {}
        self._split_keys: dict[int, tuple[Split, str]] = {}
        self._trainval: Split | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        *,
        data: dict[str, Any] | None = None,
        shortcut: dict[str, Any] | str | None = None,
        device: torch.device | str = "cpu",
        amp: bool = False,
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
        seed: int = 0,
    ) -> FeatureSource:
        """Rebuild a run from its checkpoint (a ``.pt`` file or a run directory).

        Args:
            data: overrides of the checkpoint's data spec; ``None`` values keep the recorded ones, a
                different ``name`` starts from that dataset's defaults (keeping the image size).
            shortcut: a shortcut to audit instead of the recorded one (a name or ``{"name": ..., ...}``).
        """
        from shortcutlens.build import build_components, build_data, checkpoint_spec, load_weights
        from shortcutlens.checkpoint import load_checkpoint
        from shortcutlens.data.shortcuts import create_shortcut

        state = load_checkpoint(checkpoint, map_location="cpu")
        spec = checkpoint_spec(state, checkpoint)
        recorded = dict(spec["data"])
        built = build_data({"data": merge_data_spec(recorded, data)}, seed=seed)
        # The models are rebuilt as they were trained (size and channels of the recorded data); other
        # data is brought to them (resized when loaded, channels adapted per batch).
        chans = stem_channels(state["backbone"]) or built.channels
        size = int(recorded.get("image_size") or built.image_size)
        parts = build_components(spec, in_chans=chans, image_size=size)
        load_weights(parts, state, checkpoint, optional=("pretext",))  # the head is not needed to embed images
        # A trunk trained on a patch task's tiles embeds whole images as the mean over the 3×3 grid;
        # tiles themselves (the pretext's own embed) still go straight to it.
        backbone = probe_backbone(parts.backbone, parts.pretext, size)
        lens = parts.lens
        audit_shortcut = parts.shortcut
        if shortcut is not None:
            sc = {"name": shortcut} if isinstance(shortcut, str) else dict(shortcut)
            audit_shortcut = create_shortcut(sc.pop("name"), **sc)
        spec["data"] = merge_data_spec(recorded, data)
        info = {"checkpoint": str(Path(checkpoint)), "step": int(state.get("step", 0)), "spec": spec}
        return cls(backbone=backbone, data=built, lens=lens, pretext=parts.pretext, shortcut=audit_shortcut,
                   in_chans=parts.in_chans, device=device, amp=amp, batch_size=batch_size, cache_dir=cache_dir,
                   progress=progress, seed=seed, info=info)

    # ------------------------------------------------------------------ splits and views
    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def split(self, name: str | Split) -> Split:
        """A split by name (``train``, ``val``, ``test``, or ``trainval`` = train ∪ val), or as given."""
        if isinstance(name, Split):
            return name
        if name == "trainval":
            if self._trainval is None:
                tr, va = self.data.train, self.data.val
                self._trainval = (concat_streamed(tr, va) if is_streamed(tr) else  # a folder too big for memory
                                  Split(torch.cat([tr.images, va.images]), torch.cat([tr.labels, va.labels])))
            return self._trainval
        return self.data.split(name)

    def view_transform(self, view: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The on-device map from float ``[0, 1]`` images to what the backbone sees under ``view``."""
        if view == "clean":
            return lambda x: adapt_channels(x, self.in_chans)
        if self.shortcut is None:
            raise ValueError(f"image view '{view}' needs a shortcut, and this run has none (pass one to audit)")
        sc = self.shortcut
        if view == "shortcut":
            return lambda x: adapt_channels(sc(x), self.in_chans)
        if view.startswith("blank_shortcut"):
            fill = float(view.split("@")[1]) if "@" in view else 0.0
            return lambda x: adapt_channels(sc(torch.full_like(x, fill)), self.in_chans)
        if view.startswith("mark_rot") and view[len("mark_rot"):].isdigit():
            k = int(view[len("mark_rot"):]) % 4
            return lambda x: adapt_channels(
                torch.rot90(sc(torch.rot90(x, k, dims=(-2, -1))), -k, dims=(-2, -1)), self.in_chans)
        raise ValueError(f"Unknown image view '{view}'. Valid views: {', '.join(BASE_VIEWS)}, "
                         "blank_shortcut@<fill>, mark_rot<k>")

    # ------------------------------------------------------------------ features
    def _fingerprint(self, what: str) -> str:
        """The weights' part of a cache key. A source's weights are fixed for its lifetime, so an in-memory
        cache (no ``cache_dir``) keys on the module itself: no hashing of (device) weights, which for a
        giant ViT is gigabytes copied to the host for the training loop's throwaway source."""
        if what not in self._fingerprints:
            module = self.backbone if what == "backbone" else self.lens
            self._fingerprints[what] = (fingerprint_modules([module]) if self.cache.directory is not None
                                        else f"{what}@{id(module)}")
        return self._fingerprints[what]

    def _split_key(self, split: Split) -> str:
        entry = self._split_keys.get(id(split))
        if entry is None or entry[0] is not split:
            entry = (split, fingerprint_split(split))
            self._split_keys[id(split)] = entry
        return entry[1]

    def features(
        self,
        split: str | Split,
        *,
        layers: Any = None,
        which: str = "raw",
        view: str = "clean",
        desc: str | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features ``{layer: (N, D)}`` and labels ``(N,)`` of ``split`` under ``view``; cached per layer,
        and only the missing layers are extracted (in one pass)."""
        names = parse_layers(layers, self.backbone)
        the_split = self.split(split)
        base = [self._fingerprint("backbone"), self._fingerprint("lens") if which != "raw" else "-",
                self._split_key(the_split), view, describe(self.shortcut) if view != "clean" else "-",
                which, self.in_chans, self.amp]
        keys = {name: make_key(*base, name) for name in names}
        out: dict[str, torch.Tensor] = {}
        labels: torch.Tensor | None = None
        for name, key in keys.items():
            hit = self.cache.get(key)
            if hit is not None:
                out[name], labels = hit
        missing = [n for n in names if n not in out]
        if missing:
            label = desc or f"features {split if isinstance(split, str) else 'split'} [{view}, {which}]"
            start = time.perf_counter()
            feats, labels = extract_layers(
                self.backbone, the_split, layers=missing, device=self.device, batch_size=self.batch_size,
                lens=self.lens, which=which, transform=self.view_transform(view), amp=self.amp,
                progress=self.progress, desc=label)
            log.info("%s: %d images, %s in %.1f s", label, len(labels), ", ".join(missing), time.perf_counter() - start)
            for name in missing:
                self.cache.put(keys[name], feats[name], labels)
                out[name] = feats[name]
        assert labels is not None
        return {name: out[name] for name in names}, labels


def merge_data_spec(recorded: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's data spec with ``override``'s non-null values on top (see ``from_checkpoint``).

    A different ``name`` starts from that dataset's own defaults; the recorded ``image_size`` always
    wins, because the models (a lens's depth, a ViT's position embeddings) were built for it.
    """
    override = {k: v for k, v in (override or {}).items() if v is not None}
    if not override:
        return recorded
    if "name" in override and override["name"] != recorded.get("name"):
        merged = dict(override)
    else:
        merged = {**recorded, **override}
    if recorded.get("image_size"):
        merged["image_size"] = recorded["image_size"]
    return merged


def stem_channels(state: dict[str, torch.Tensor]) -> int | None:
    """Input channels of a backbone from its weights: the first 4-D (convolution) weight's dim 1."""
    for name, t in state.items():
        if name.endswith("weight") and t.ndim == 4:
            return int(t.shape[1])
    return None
