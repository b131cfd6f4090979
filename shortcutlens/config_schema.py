"""What every configuration key may hold, in one place, and the checks the apps run before any work.

Each key of each config group (``trainer``, ``data``, ``backbone``, ``pretext``, ``lens``, ``shortcut``,
``probe``, and the keys of the probe and visualize apps) has a :class:`Rule`: its type and range, said
in words for the error message. The apps call :func:`validate_train`, :func:`validate_probe` or
:func:`validate_visualize` on the whole resolved config before any data is read or any process group
is started; a violation raises :class:`ConfigError` whose message is one line naming the key, the
value given and what is allowed::

    trainer.steps=-5: must be an integer ≥ 1

Keys of the dataclass-backed groups (``TrainerConfig``, ``AdversaryConfig``, ``ProbeConfig``, the
evaluators) and of the YAML groups are covered by tests (``tests/test_validation.py`` checks that every
such key has a rule). A key without a rule (a third-party component's argument) is left to its
component, which raises ``ValueError``/``TypeError`` at build time.

Cross-key rules: warm-up + cool-down fit in the run; the image size is divisible by a ViT/Mixer patch
size and by the lens stride; a targeted lens mode needs a classification pretext; a batch fits in the
training split. Components are also built once on the ``meta`` device (no memory, no data), so any
argument their constructors refuse is refused before training starts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value the user gave is not allowed; the message is one line."""


# ---------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """``allowed``: what the key may hold, in words; ``test(value) -> bool``."""

    allowed: str
    test: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(float(v))


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    def show(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{show(lo)}, {show(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '≥'} {show(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '≤'} {show(hi)}"
    return ""


def _within(v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    return not (hi is not None and (v > hi or (hi_open and v == hi)))


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    return Rule("an integer" + _bounds(lo, hi, False, False), lambda v: _is_int(v) and _within(v, lo, hi, False, False))


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    return Rule("a number" + _bounds(lo, hi, lo_open, hi_open),
                lambda v: _is_number(v) and _within(float(v), lo, hi, lo_open, hi_open))


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def text() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))


def one_of(*choices: Any) -> Rule:
    shown = ", ".join(_fmt(c) for c in choices)
    return Rule(f"one of {shown}", lambda v: not isinstance(v, (list, dict)) and any(
        v == c and type(v) is type(c) for c in choices))


def optional(rule: Rule) -> Rule:
    return Rule(f"null or {rule.allowed}", lambda v: v is None or rule.test(v))


def list_of(rule: Rule, *, min_len: int = 0, max_len: int | None = None) -> Rule:
    size = "" if min_len == 0 and max_len is None else (
        f" of {min_len}" if min_len == max_len else f" of at least {min_len}" if max_len is None else f" of {min_len}-{max_len}")
    return Rule(f"a list{size} (each {rule.allowed})",
                lambda v: isinstance(v, (list, tuple)) and min_len <= len(v) <= (max_len if max_len is not None else len(v))
                and all(rule.test(x) for x in v))


def fraction_range() -> Rule:
    """A ``(min, max)`` area fraction: ``0 < min ≤ max ≤ 1``."""
    return Rule("a list [min, max] with 0 < min ≤ max ≤ 1",
                lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v)
                and 0 < v[0] <= v[1] <= 1)


def odd_count() -> Rule:
    """A positive odd integer: the side of a window centred on a pixel."""
    return Rule("a positive odd integer", lambda v: _is_int(v) and v >= 1 and v % 2 == 1)


def position() -> Rule:
    return list_of(number(0, 1), min_len=2, max_len=2)


def variant(sizes: Iterable[str]) -> Rule:
    sizes = tuple(sizes)
    pattern = re.compile(rf"({'|'.join(map(re.escape, sizes))})/([1-9][0-9]*)")
    return Rule(f"'<size>/<patch>' with size one of {', '.join(sizes)} and a positive patch (e.g. {sizes[0]}/4)",
                lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None)


def _fmt(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def refuse(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={_fmt(value)}: must be {allowed}")


# ---------------------------------------------------------------------------------------------- the tables

PROBABILITY = number(0, 1)
POSITIVE = number(0, lo_open=True)
NON_NEGATIVE = number(0)
COUNT = integer(1)
PATH = optional(text())
LEARNING_RATE = number(0, 1000, lo_open=True)  # above this float32 arithmetic overflows, not just diverges
SEED = integer(0, 2**32 - 1)  # numpy's and most samplers' seed range

TOP_TRAIN: dict[str, Rule] = {
    "run_dir": text(), "seed": SEED, "device": one_of("auto", "cpu", "cuda"), "resume": boolean(),
    "debug": boolean(),
}

TRAINER: dict[str, Rule] = {
    "steps": COUNT, "batch_size": COUNT, "optimizer": one_of("sgd", "adamw", "adam", "adafactor"), "lr": LEARNING_RATE,
    "weight_decay": NON_NEGATIVE, "head_weight_decay": optional(NON_NEGATIVE), "momentum": number(0, 1, hi_open=True),
    "warmup_steps": integer(0), "schedule": one_of("cosine", "constant", "rsqrt"), "cooldown_steps": integer(0),
    "rsqrt_timescale": COUNT, "grad_clip": NON_NEGATIVE,
    "augment": list_of(one_of("flip", "crop", "resized_crop", "color_jitter", "grayscale")),
    "log_every": COUNT, "ckpt_every": COUNT, "image_every": integer(0), "amp": one_of("auto", "bf16", "off"),
    "channels_last": boolean(), "compile": boolean(), "progress": boolean(), "strategy": one_of("ddp", "fsdp"),
    "sync_bn": boolean(), "find_unused_parameters": boolean(),
}

# The lens group holds the game's settings (``AdversaryConfig``) beside the module's arguments.
ADVERSARY: dict[str, Rule] = {
    # ``mode``'s valid names come from the objective registry when there is one (see check_lens_mode).
    "mode": text(), "rec_weight": NON_NEGATIVE, "lr": LEARNING_RATE, "feed_raw": boolean(), "reverse_scale": POSITIVE,
    "update_every": COUNT,
}

LENS: dict[str, dict[str, Rule]] = {
    "none": {},
    "unet": {"width": COUNT, "max_levels": COUNT, "constraint": one_of("budget", "penalty"), "budget": POSITIVE,
             "clamp": boolean(), "stride": COUNT, "edit": one_of("residual", "erase"),
             "fill_size": odd_count()},
}

PROBE: dict[str, Rule] = {
    "features": one_of("raw", "lensed", "concat"), "l2": NON_NEGATIVE, "untrained": boolean(), "batch_size": COUNT,
    "max_iter": COUNT, "max_train": integer(0), "l2_grid": list_of(POSITIVE), "precision": one_of("float32", "float64"),
}

# Below 8 px the U-Net lens has no level to run and the patch tasks have no tiles to cut.
IMAGE_SIZE = integer(8, 1024)
DATA_COMMON: dict[str, Rule] = {"root": PATH, "image_size": optional(IMAGE_SIZE), "train_size": optional(integer(0)),
                                "val_fraction": number(0, 1, hi_open=True), "seed": integer(0)}
DATA: dict[str, dict[str, Rule]] = {
    "digits": {"test_fraction": number(0, 1, lo_open=True, hi_open=True)},
    "fashion_mnist": {"download": boolean()},
    "cifar10": {"download": boolean()},
    "cifar100": {"download": boolean()},
    "stl10": {"download": boolean(), "unlabeled": boolean()},
    "imagefolder": {"grayscale": boolean(), "test_fraction": number(0, 1, lo_open=True, hi_open=True),
                    "stream": Rule("auto, true or false", lambda v: v == "auto" or isinstance(v, bool)),
                    "max_memory_gb": POSITIVE, "workers": integer(0, 256)},
    "synthetic": {"channels": one_of(1, 3), "num_classes": integer(2, 64), "num_train": integer(2),
                  "num_test": integer(1)},
}
#: Side of each source's images when ``data.image_size`` is null, and their channels.
NATIVE = {"digits": (8, 1), "fashion_mnist": (28, 1), "cifar10": (32, 3), "cifar100": (32, 3), "stl10": (96, 3),
          "imagefolder": (64, 3), "synthetic": (16, 1)}

VIT_SIZES = ("Ti", "S", "M", "B", "L", "H", "g", "G")
MIXER_SIZES = ("S", "B", "L", "H")
BACKBONE: dict[str, dict[str, Rule]] = {
    "resnet": {"depth": one_of(18, 34, 50, 101, 152), "version": one_of(1, 2), "width": POSITIVE,
               "stem": one_of("auto", "imagenet", "small")},
    "vit": {"variant": variant(VIT_SIZES), "pool": one_of("gap", "map", "tok"), "posemb": one_of("learn", "sincos2d"),
            "drop_path_rate": number(0, 1, hi_open=True), "grad_checkpointing": boolean(), "width": optional(COUNT),
            "depth": optional(COUNT), "mlp_dim": optional(COUNT), "num_heads": optional(COUNT)},
    "mixer": {"variant": variant(MIXER_SIZES), "drop_path_rate": number(0, 1, hi_open=True),
              "grad_checkpointing": boolean(), "hidden": optional(COUNT), "depth": optional(COUNT),
              "tokens_mlp": optional(COUNT), "channels_mlp": optional(COUNT)},
}

_PATCH_TASK = {"hidden_dim": COUNT, "dropout": number(0, 1, hi_open=True), "grid_fraction": number(0, 1, lo_open=True),
               "jitter_fraction": number(0, 1, hi_open=True), "grayscale_probability": PROBABILITY,
               "probe_tiles": boolean()}
_INSTANCE_AUGMENT = {"crop_scale": fraction_range(), "jitter_probability": PROBABILITY,
                     "grayscale_probability": PROBABILITY}
PRETEXT: dict[str, dict[str, Rule]] = {
    "rotation": {"all_rotations": boolean(), "hidden_dim": integer(0)},
    "relative_location": dict(_PATCH_TASK),
    "jigsaw": {**_PATCH_TASK, "num_permutations": integer(2, 1000), "permutation_seed": integer(0),
               "permutations_per_image": COUNT},
    "exemplar": {**_INSTANCE_AUGMENT, "copies": integer(2), "embed_dim": COUNT, "margin": NON_NEGATIVE,
                 "squared_distance": boolean(), "brightness": NON_NEGATIVE, "contrast": number(0, 1),
                 "saturation": NON_NEGATIVE, "hue": number(0, 0.5)},
    "contrastive": {**_INSTANCE_AUGMENT, "temperature": POSITIVE, "proj_dim": COUNT, "proj_hidden_dim": optional(COUNT),
                    "jitter_strength": NON_NEGATIVE, "gather_distributed": boolean()},
}

_MARK = {"position": position(), "size": number(0, 1, lo_open=True), "intensity": NON_NEGATIVE}
SHORTCUT: dict[str, dict[str, Rule]] = {
    "none": {}, "arrow": dict(_MARK), "watermark": dict(_MARK), "chromatic_aberration": dict(_MARK),
    "gradient": {"intensity": NON_NEGATIVE}, "position_tint": {"intensity": number(0, 2 / 3)},
    "instance_code": {"bits": integer(1, 64), "cell": COUNT, "position": position(),
                      "contrast": number(0, 1, lo_open=True)},
}

TAPS = list_of(Rule("'pooled' or a layer index", lambda v: v == "pooled" or _is_int(v)), min_len=1)
WHICH = list_of(one_of("raw", "lensed", "concat"), min_len=1)
SPLITS = ("train", "val", "test", "trainval")
TOP_PROBE: dict[str, Rule] = {
    "checkpoint": text(), "evaluators": list_of(text(), min_len=1), "layers": TAPS, "which": WHICH,
    "run_dir": text(), "seed": SEED, "resume": boolean(), "device": one_of("auto", "cpu", "cuda"),
    "amp": one_of("auto", "bf16", "off"), "batch_size": COUNT, "cache": boolean(), "cache_dir": PATH,
    "progress": boolean(), "debug": boolean(), "allow_nonfinite": boolean(),
}
EVALUATOR: dict[str, dict[str, Rule]] = {
    "linear": {"layers": TAPS, "which": WHICH, "l2_grid": list_of(POSITIVE, min_len=1),
               "val_fraction": number(0, 1, lo_open=True, hi_open=True), "max_iter": COUNT,
               "precision": one_of("float32", "float64"), "max_train": integer(0), "train_split": one_of(*SPLITS),
               "val_split": optional(one_of(*SPLITS))},
    "fewshot": {"layers": TAPS, "which": WHICH, "shots": list_of(COUNT, min_len=1), "seeds": COUNT,
                "l2": Rule("a number > 0 or a non-empty list of them",
                           lambda v: POSITIVE.test(v) or list_of(POSITIVE, min_len=1).test(v)),
                "train_split": one_of(*SPLITS), "test_split": one_of(*SPLITS)},
    "knn": {"layers": TAPS, "which": WHICH, "k": COUNT, "temperature": POSITIVE, "chunk": COUNT,
            "train_split": one_of(*SPLITS), "test_split": one_of(*SPLITS)},
    "episodes": {"layers": TAPS, "which": WHICH, "episodes": COUNT, "adapters": list_of(
                     one_of("prototype", "ridge", "finetune"), min_len=1), "split": one_of(*SPLITS),
                 "min_ways": integer(2), "max_ways": integer(2), "max_query": COUNT, "max_support": COUNT,
                 "max_support_per_class": COUNT, "ridge_l2": POSITIVE, "finetune_episodes": optional(integer(0)),
                 "finetune_steps": COUNT, "finetune_lr": POSITIVE, "finetune_batch_size": COUNT},
    "shortcut_audit": {"layers": TAPS, "fill": number(0, 1), "max_images": COUNT, "probe_l2": NON_NEGATIVE,
                       "probe_max_iter": COUNT, "decode": list_of(one_of("presence", "orientation"), min_len=1)},
    "vtab1k": {"datasets": list_of(text(), min_len=1), "layers": TAPS, "which": WHICH, "train_size": COUNT,
               "val_size": COUNT, "l2_grid": list_of(POSITIVE, min_len=1), "max_iter": COUNT, "root": PATH},
}

TOP_VISUALIZE: dict[str, Rule] = {
    "checkpoint": text(), "split": one_of("train", "val", "test", "unlabeled"), "num_images": integer(1, 256),
    "max_images": COUNT, "shortcut": boolean(), "run_dir": PATH, "seed": SEED,
    "device": one_of("auto", "cpu", "cuda"), "resume": boolean(), "allow_nonfinite": boolean(),
}


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key (``trainer.steps``, ``backbone.width``, ``knn.k``), if any table has one."""
    group, _, leaf = key.rpartition(".")
    if not group:
        return TOP_TRAIN.get(leaf) or TOP_PROBE.get(leaf) or TOP_VISUALIZE.get(leaf)
    flat: dict[str, dict[str, Rule]] = {"trainer": TRAINER, "probe": PROBE, "data": DATA_COMMON, **EVALUATOR}
    if group in flat and leaf in flat[group]:
        return flat[group][leaf]
    per_name = {"data": DATA, "backbone": BACKBONE, "pretext": PRETEXT, "lens": {**LENS, "game": ADVERSARY},
                "shortcut": SHORTCUT}.get(group, {})
    found = [rules[leaf] for rules in per_name.values() if leaf in rules]
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------- checks


def check_node(prefix: str, node: Any, rules: dict[str, Rule], *, skip: Iterable[str] = ()) -> None:
    """Every key of ``node`` that has a rule must satisfy it."""
    if not isinstance(node, dict):
        raise ConfigError(f"{prefix}={_fmt(node)}: must be a group of settings ({prefix}.<key>=...)")
    skip = set(skip)
    for key, value in node.items():
        rule = rules.get(key)
        if rule is not None and key not in skip and not rule.test(value):
            raise refuse(f"{prefix}.{key}" if prefix else key, value, rule.allowed)


def check_name(group: str, node: dict[str, Any], registry: Any) -> str:
    """``<group>.name`` must be a registered name (the registry's own one-line error lists them)."""
    if "name" not in node:
        raise ConfigError(f"{group}.name is missing: set {group}=<name> or +{group}.name=<name>")
    name = node["name"]
    if not isinstance(name, str):
        raise refuse(f"{group}.name", name, "a registered name")
    registry.get(name)
    return name


def explicit_keys() -> set[str] | None:
    """The keys the user set on the command line (Hydra's task overrides), or None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    except Exception:  # noqa: BLE001 (no Hydra context: every key counts as given)
        return None


def check_run_dir(run_dir: str | os.PathLike) -> None:
    """``run_dir`` must be a writable folder or creatable as one; never a file."""
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run_dir={run_dir}: is a file, not a folder; name a folder for the run's outputs")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run_dir={run_dir}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"run_dir={run_dir}: {existing} is not writable; choose a folder you can write to")


def check_data_root(key: str, root: Any) -> None:
    """A data root the user names must be an existing folder: never a silent fall-back elsewhere."""
    if root is None:
        return
    path = Path(str(root)).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={root}: no such folder")
    if not path.is_dir():
        raise ConfigError(f"{key}={root}: is a file, not a folder")


def check_checkpoint_path(key: str, checkpoint: Any) -> None:
    if checkpoint in (None, "???", ""):
        raise ConfigError(f"{key} is missing: pass {key}=<run directory or .pt file>")
    path = Path(str(checkpoint)).expanduser()
    if not path.exists():  # the same one line as load_checkpoint's, before any data is read
        from shortcutlens.checkpoint import CheckpointError

        raise CheckpointError(f"no checkpoint at {path} (pass {key}=<a .pt file or a run directory with "
                              "checkpoints/latest.pt>)")


def check_lens_mode(mode: str, pretext_name: str) -> None:
    """The cross-key rule "a lens mode the pretext supports", asked of the lens-objective registry
    (``shortcutlens.adversary``: its modes, and which of them need a classification pretext)."""
    from shortcutlens.adversary import check_mode

    try:
        check_mode(mode=mode, pretext=pretext_name)
    except ValueError as err:
        raise ConfigError(f"lens.mode={mode}: {str(err).splitlines()[0]}") from err


def _image_size(data: dict[str, Any]) -> int | None:
    size = data.get("image_size")
    if size is None:
        return NATIVE.get(data.get("name"), (None, None))[0]
    return int(size)


def _channels(data: dict[str, Any]) -> int:
    name = data.get("name")
    if name == "synthetic":
        return int(data.get("channels", 1))
    if name == "imagefolder":
        return 1 if data.get("grayscale") else 3
    return NATIVE.get(name, (None, 3))[1]


def validate_components(cfg: dict[str, Any]) -> None:
    """The ``data``, ``backbone``, ``pretext``, ``lens`` and ``shortcut`` groups: names, ranges, and the
    cross-key rules between them; then a dry build on the ``meta`` device."""
    from pretexts import PRETEXTS
    from shortcutlens.backbones import ALIASES, BACKBONES
    from shortcutlens.data import DATASETS
    from shortcutlens.data.shortcuts import SHORTCUTS
    from shortcutlens.lens import LENSES
    from shortcutlens.train.config import AdversaryConfig

    data = cfg["data"]
    name = check_name("data", data, DATASETS)
    check_node("data", data, {**DATA_COMMON, **DATA.get(name, {})})
    check_data_root("data.root", data.get("root"))

    backbone = cfg["backbone"]
    if not isinstance(backbone, dict):
        check_node("backbone", backbone, {})
    bname = backbone.get("name")
    if not (isinstance(bname, str) and re.fullmatch(r"(.+)_(\d+)", bname) and bname.rsplit("_", 1)[0] in ALIASES):
        bname = check_name("backbone", backbone, BACKBONES)
    check_node("backbone", backbone, BACKBONE.get(bname, {}))

    pretext = cfg["pretext"]
    pname = check_name("pretext", pretext if isinstance(pretext, dict) else {"name": pretext}, PRETEXTS)
    check_node("pretext", pretext, PRETEXT.get(pname, {}))

    lens = cfg.get("lens") or {"name": "none"}
    lname = check_name("lens", lens, LENSES)
    check_node("lens", lens, {**ADVERSARY, **LENS.get(lname, {})})
    if lname != "none":
        check_lens_mode(lens.get("mode", AdversaryConfig.mode), pname)

    shortcut = cfg.get("shortcut") or {"name": "none"}
    sname = check_name("shortcut", shortcut, SHORTCUTS)
    check_node("shortcut", shortcut, SHORTCUT.get(sname, {}))

    size = _image_size(data)
    if size is None:
        return  # a third-party source: its own loader checks its images
    size_key = f"data.image_size={data['image_size']}" if data.get("image_size") is not None else \
        f"data={name}'s {size}-px images"
    if lname == "unet":
        stride = int(lens.get("stride", 1))
        if size % stride:
            raise ConfigError(f"{size_key} is not divisible by lens.stride={stride}; use an image size that is")
        if size // stride < 8:
            raise ConfigError(f"{size_key} with lens.stride={stride} leaves {size // stride} px; the U-Net lens needs ≥ 8")
    dry_build(cfg, size=size, size_key=size_key, channels=_channels(data))


def dry_build(cfg: dict[str, Any], *, size: int, size_key: str, channels: int) -> None:
    """Build backbone, pretext, lens and shortcut on the ``meta`` device: every argument their
    constructors refuse (a patch size that does not divide the tiles, an unknown keyword) is refused
    now, in one line, with no memory used and no data read."""
    import dataclasses

    import torch

    from shortcutlens.build import build_components, trunk_input_size
    from shortcutlens.train.config import AdversaryConfig

    game = {f.name for f in dataclasses.fields(AdversaryConfig)}
    lens_module = {k: v for k, v in (cfg.get("lens") or {"name": "none"}).items() if k not in game}
    spec = {"backbone": cfg["backbone"], "pretext": cfg["pretext"], "lens": lens_module,
            "shortcut": cfg.get("shortcut") or {"name": "none"}}
    try:
        patch = _patch_of(cfg["backbone"])
        if patch:
            pretext = dict(cfg["pretext"])
            pname = pretext.pop("name")
            trunk = trunk_input_size(pname, pretext, size)
            seen = f"{size_key}" if trunk == size else f"{size_key} (cut by pretext={pname} into {trunk}-px tiles)"
            if trunk % patch:
                raise ConfigError(f"{seen} is not divisible by backbone.variant={cfg['backbone']['variant']}'s "
                                  f"patch size {patch}")
        with torch.device("meta"):
            build_components(spec, in_chans=channels, image_size=size)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    except Exception:  # noqa: BLE001 (a constructor that cannot run on meta: its real build checks it)
        return


def _patch_of(backbone: dict[str, Any]) -> int | None:
    v = backbone.get("variant")
    if backbone.get("name") in ("vit", "mixer") and isinstance(v, str) and "/" in v:
        return int(v.split("/", 1)[1])
    return None


def validate_train(cfg: dict[str, Any], *, run_dir: str | os.PathLike | None = None) -> None:
    """The whole resolved ``shortcutlens-train`` config, before any data is read or process group started."""
    check_node("", cfg, TOP_TRAIN)
    check_node("trainer", cfg["trainer"], TRAINER)
    check_node("probe", cfg["probe"], PROBE)
    validate_components(cfg)
    t = cfg["trainer"]
    warm, cool, steps = t["warmup_steps"], t["cooldown_steps"], t["steps"]
    given = explicit_keys() or set()
    # The default warm-up (50 steps) on a shorter smoke run is allowed: the run stays in warm-up.
    if warm + cool > steps and (cool > 0 or "trainer.warmup_steps" in given):
        raise ConfigError(f"trainer.warmup_steps={warm} + trainer.cooldown_steps={cool} exceeds trainer.steps={steps}: "
                          "warm-up and cool-down must fit in the run")
    train_size = cfg["data"].get("train_size")
    if train_size and t["batch_size"] > train_size:
        raise ConfigError(f"trainer.batch_size={t['batch_size']} exceeds data.train_size={train_size}: a batch must fit "
                          "in the training images")
    if run_dir is not None:
        check_run_dir(run_dir)


def check_data_fits(cfg: dict[str, Any], data: Any, *, world_size: int = 1) -> None:
    """After the data is read: one batch per rank fits in the images pretext training draws from."""
    n = len(data.pretrain_split)
    batch = cfg["trainer"]["batch_size"]
    if batch * world_size > n:
        ranks = f" x {world_size} ranks" if world_size > 1 else ""
        raise ConfigError(f"trainer.batch_size={batch}{ranks} exceeds the {n} training images of data={cfg['data']['name']}; "
                          f"use trainer.batch_size ≤ {n // world_size}")


def validate_evaluators(cfg: dict[str, Any]) -> None:
    """The probe app's ``evaluators`` list and each listed evaluator's settings."""
    from shortcutlens.eval import EVALUATORS

    for name in cfg["evaluators"]:
        EVALUATORS.get(name)
        if isinstance(cfg.get(name), dict):
            check_node(name, cfg[name], EVALUATOR.get(name, {}))
    for name, rules in EVALUATOR.items():  # settings of an evaluator not listed are still typed
        if name not in cfg["evaluators"] and isinstance(cfg.get(name), dict):
            check_node(name, cfg[name], rules)


def validate_probe(cfg: dict[str, Any], *, run_dir: str | os.PathLike | None = None,
                   choices: dict[str, Any] | None = None, conf_dir: str | None = None) -> None:
    """The whole resolved ``shortcutlens-probe`` config. ``choices``: Hydra's group choices (``data``,
    ``shortcut``), each of which must name a config of its group."""
    check_node("", cfg, TOP_PROBE, skip=EVALUATOR.keys())
    check_checkpoint_path("checkpoint", cfg.get("checkpoint"))
    validate_evaluators(cfg)
    for group in ("data", "shortcut"):
        chosen = (choices or {}).get(group)
        if chosen is not None and conf_dir is not None and chosen != "from_checkpoint":
            valid = sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))
            if chosen not in valid:
                raise ConfigError(f"{group}={chosen}: no such option. Valid options for {group}: {', '.join(valid)}")
    data = cfg.get("data")
    if isinstance(data, dict):
        from shortcutlens.data import DATASETS

        if data.get("name") is not None:
            check_name("data", data, DATASETS)
        check_node("data", data, {**DATA_COMMON, **DATA.get(data.get("name"), {})})
        check_data_root("data.root", data.get("root"))
    shortcut = cfg.get("shortcut")
    if isinstance(shortcut, dict) and shortcut.get("name") is not None:
        from shortcutlens.data.shortcuts import SHORTCUTS

        check_node("shortcut", shortcut, SHORTCUT.get(check_name("shortcut", shortcut, SHORTCUTS), {}))
    if run_dir is not None:
        check_run_dir(run_dir)


def validate_visualize(cfg: dict[str, Any]) -> None:
    """The whole resolved ``shortcutlens-visualize`` config."""
    check_node("", cfg, TOP_VISUALIZE, skip=("data",))
    check_checkpoint_path("checkpoint", cfg.get("checkpoint"))
    data = cfg.get("data") or {}
    check_node("data", data, {"root": PATH})
    check_data_root("data.root", data.get("root"))
    if cfg.get("run_dir") is not None:
        check_run_dir(cfg["run_dir"])
