"""Copy an image folder with a mark of your choosing drawn on its pictures: a shortcut nobody named.

A user's own pictures may carry a cue no one has told the lens about (a logo, a scanner's corner mark,
a watermark in one class). This script plants such a cue on purpose, so that you can see whether a
pretext task latches onto it and whether the lens finds it without being told where it is::

    python experiments/mark_folder.py my_images marked --mark corner                # an L-shaped bracket, top-left
    python experiments/mark_folder.py my_images marked --mark logo.png --position 1 1 --size 0.2
    python experiments/mark_folder.py my_images marked --mark dot --classes 3 7 --fraction 0.5 --seed 1

The source is ``root/<class>/*.png|jpg|...`` or ``root/train|test|val/<class>/...``; the copy keeps every
folder and file name (so labels and the seeded train/test split stay the same), draws the mark on the
chosen pictures and copies the others byte for byte. ``mark.json`` at the copy's root records what was
drawn and where. The source folder is never written to. Pillow and numpy only.

The mark is placed inside the picture: ``--position y x`` are fractions of the free room, so ``0 0`` puts
it in the top-left corner, ``1 1`` in the bottom-right one and ``0.5 0.5`` in the middle; ``--size`` is
its side as a fraction of the picture's shorter side. It is blended in as
``pixel * (1 - a) + colour * a`` with ``a = alpha * intensity`` (a PNG's own alpha and colours; the
built-in marks use ``--color``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # what imagefolder reads
BUILTIN_MARKS = ("corner", "arrow", "dot")
SPLIT_FOLDERS = ("train", "test", "val")
MANIFEST = "mark.json"


class MarkError(Exception):
    """A mistake the user can fix; reported as one line."""


# ---------------------------------------------------------------------------------------------- marks


def builtin_mark(name: str, side: int) -> np.ndarray:
    """The alpha mask ``(side, side)`` in ``[0, 1]`` of a built-in mark.

    ``corner``: an L-shaped bracket (a stroke down the left and one along the bottom), which looks
    different under every rotation and so gives orientation away; ``arrow``: an upward arrow; ``dot``:
    a filled disc.
    """
    alpha = np.zeros((side, side), dtype=np.float32)
    stroke = max(1, round(side / 4))
    if name == "corner":
        alpha[:, :stroke] = 1.0
        alpha[side - stroke:, :] = 1.0
    elif name == "arrow":
        centre = side // 2
        half = max(0, stroke // 2)
        alpha[side // 3:, max(0, centre - half):centre - half + stroke] = 1.0  # the shaft
        for row in range(side // 2 + 1):  # the head: a triangle widening downwards from the tip
            alpha[row, max(0, centre - row):min(side, centre + row + 1)] = 1.0
    elif name == "dot":
        yy, xx = np.mgrid[:side, :side]
        radius = side / 2
        alpha[(yy + 0.5 - radius) ** 2 + (xx + 0.5 - radius) ** 2 <= radius ** 2] = 1.0
    else:  # parse_args checks the name first; this is for callers from Python
        raise MarkError(f"unknown mark {name!r}: choose one of {', '.join(BUILTIN_MARKS)} or give a PNG file")
    return alpha


def load_mark_image(path: Path) -> object:
    """A PNG (or any picture) of the user's mark as an RGBA Pillow image; its alpha is respected."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGBA")
    except (OSError, SyntaxError, ValueError) as err:
        raise MarkError(f"--mark {path}: cannot read it as a picture ({type(err).__name__})") from err


def mark_layers(mark: str | object, side: int, color: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The mark at ``side`` pixels: its colour ``(h, w, 3)`` in ``[0, 255]`` and alpha ``(h, w)`` in ``[0, 1]``.

    A user's picture keeps its aspect ratio (its longer side becomes ``side``).
    """
    from PIL import Image

    if isinstance(mark, str):
        alpha = builtin_mark(mark, side)
        rgb = np.broadcast_to(np.asarray(color, dtype=np.float32), alpha.shape + (3,))
        return rgb, alpha
    width, height = mark.size
    scale = side / max(width, height)
    resized = mark.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    arr = np.asarray(resized, dtype=np.float32)
    return arr[..., :3], arr[..., 3] / 255.0


def mark_box(*, height: int, width: int, size: float, position: tuple[float, float]) -> tuple[int, int, int]:
    """``(top, left, side)`` of the mark's square in a ``height x width`` picture, always inside it."""
    side = min(height, width, max(3, round(size * min(height, width))))
    top = round(position[0] * (height - side))
    left = round(position[1] * (width - side))
    return top, left, side


def draw_mark(picture: object, *, mark: str | object, size: float, position: tuple[float, float],
              intensity: float, color: tuple[int, int, int]) -> tuple[object, list[int]]:
    """``picture`` with the mark blended in, and the box ``[top, left, height, width]`` it covers.

    The picture keeps its mode: grayscale stays grayscale (the mark's colour becomes its luminance),
    an alpha channel is kept untouched; modes other than L, LA, RGB and RGBA are drawn on as RGB.
    """
    from PIL import Image

    if picture.mode not in ("L", "LA", "RGB", "RGBA"):
        picture = picture.convert("RGB")
    arr = np.asarray(picture, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    height, width = arr.shape[:2]
    top, left, side = mark_box(height=height, width=width, size=size, position=position)
    rgb, alpha = mark_layers(mark, side, color)
    h, w = alpha.shape
    top += (side - h) // 2  # a non-square user mark sits centred in its square
    left += (side - w) // 2
    colour_channels = 1 if picture.mode in ("L", "LA") else 3
    paint = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if colour_channels == 1 else rgb
    paint = paint.reshape(h, w, colour_channels)
    a = (alpha * intensity)[..., None]
    region = arr[top:top + h, left:left + w, :colour_channels]
    arr[top:top + h, left:left + w, :colour_channels] = region * (1 - a) + paint * a
    out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    out = out[..., 0] if picture.mode == "L" else out
    return Image.fromarray(out, mode=picture.mode), [int(top), int(left), int(h), int(w)]


# ---------------------------------------------------------------------------------------------- folders


def list_pictures(src: Path) -> list[Path]:
    """Every picture under ``src`` (relative paths, sorted) in imagefolder's layout."""
    pictures = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    return [p for p in pictures if len(p.parts) >= 2]  # a picture at the root has no class folder


def class_of(relative: Path) -> str:
    """The class of a picture is its folder's name (``<class>/x.png`` or ``train/<class>/x.png``)."""
    return relative.parent.name


def check_folders(src: Path, dst: Path) -> None:
    """Refuse anything that could write into the source: ``dst`` equal to it or inside it."""
    if not src.is_dir():
        raise MarkError(f"source folder {src} does not exist or is not a folder")
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real or src_real in dst_real.parents:
        raise MarkError(f"destination {dst} is the source folder or inside it; choose a folder outside {src}")
    if dst_real in src_real.parents:
        raise MarkError(f"destination {dst} contains the source folder {src}; choose a folder beside it")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise MarkError(f"destination {dst} already exists and is not an empty folder; remove it or choose another")


def mark_folder(*, src: Path, dst: Path, mark: str, position: tuple[float, float] = (0.05, 0.05),
                size: float = 0.25, intensity: float = 1.0, color: tuple[int, int, int] = (255, 255, 255),
                fraction: float = 1.0, classes: list[str] | None = None, seed: int = 0) -> dict:
    """Copy ``src`` to ``dst`` with ``mark`` drawn on the chosen pictures; returns the manifest.

    ``mark`` is a built-in name (``corner``, ``arrow``, ``dot``) or the path of a picture. A seeded
    ``fraction`` of the pictures of ``classes`` (all classes when ``None``) is marked; every other file
    is copied unchanged.
    """
    from PIL import Image

    check_folders(src, dst)
    pictures = list_pictures(src)
    if not pictures:
        raise MarkError(f"no pictures under {src}/<class>/ (extensions {', '.join(sorted(EXTENSIONS))})")
    found = sorted({class_of(p) for p in pictures})
    if classes:
        missing = [c for c in classes if c not in found]
        if missing:
            raise MarkError(f"--classes {' '.join(missing)}: no such class folder in {src} (classes: {' '.join(found)})")
    eligible = [p for p in pictures if classes is None or not classes or class_of(p) in classes]
    count = round(fraction * len(eligible))
    rng = np.random.default_rng(seed)
    chosen = {eligible[i] for i in rng.choice(len(eligible), size=count, replace=False)} if count else set()
    user_mark = None if mark in BUILTIN_MARKS else load_mark_image(Path(mark))

    drawn: dict[str, list[int]] = {}
    dst.mkdir(parents=True, exist_ok=True)
    for relative in sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file()):
        target = dst / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative not in chosen:  # unmarked pictures and any other file: byte for byte
            shutil.copy2(src / relative, target)
            continue
        try:
            with Image.open(src / relative) as im:
                im.load()
                picture = im
        except (OSError, SyntaxError, ValueError) as err:
            raise MarkError(f"cannot read {src / relative} as a picture ({type(err).__name__}); remove or replace it") from err
        marked, box = draw_mark(picture, mark=user_mark if user_mark is not None else mark, size=size,
                                position=position, intensity=intensity, color=color)
        if target.suffix.lower() in (".jpg", ".jpeg") and marked.mode not in ("L", "RGB"):
            marked = marked.convert("RGB")  # JPEG has no alpha channel
        marked.save(target)
        drawn[relative.as_posix()] = box

    manifest = {
        "source": str(src.resolve()),
        "mark": mark if user_mark is None else str(Path(mark).resolve()),
        "position_yx": list(position), "size": size, "intensity": intensity,
        "color": list(color) if user_mark is None else None,
        "fraction": fraction, "classes": classes or None, "seed": seed,
        "pictures": len(pictures), "marked": len(drawn),
        "box": "[top, left, height, width] in pixels of each marked picture, as stored",
        "marked_pictures": drawn,
    }
    (dst / MANIFEST).write_text(manifest_text(manifest))
    return manifest


def manifest_text(manifest: dict) -> str:
    """The manifest as JSON, one line per marked picture (a long list stays readable and diffable)."""
    head = {k: v for k, v in manifest.items() if k != "marked_pictures"}
    lines = json.dumps(head, indent=1)[:-2]  # without the closing "\n}"
    boxes = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest["marked_pictures"].items())
    return f"{lines},\n \"marked_pictures\": {{\n{boxes}\n }}\n}}\n"


# ---------------------------------------------------------------------------------------------- command line


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument ends in one line (no usage block) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def fraction_arg(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="the image folder to copy (never written to)")
    parser.add_argument("dst", type=Path, help="the new folder (must not exist, or be empty)")
    parser.add_argument("--mark", default="corner",
                        help=f"a built-in mark ({', '.join(BUILTIN_MARKS)}) or a picture file (PNG, alpha respected)")
    parser.add_argument("--position", nargs=2, type=fraction_arg, default=[0.05, 0.05], metavar=("Y", "X"),
                        help="where the mark sits, as fractions: 0 0 top-left, 1 1 bottom-right (default 0.05 0.05)")
    parser.add_argument("--size", type=float, default=0.25,
                        help="the mark's side as a fraction of the picture's shorter side (default 0.25)")
    parser.add_argument("--intensity", type=fraction_arg, default=1.0,
                        help="blend strength in [0, 1]; 1 paints the mark opaque (default 1)")
    parser.add_argument("--color", nargs=3, type=int, default=[255, 255, 255], metavar=("R", "G", "B"),
                        help="colour of a built-in mark, 0-255 (default white; grayscale pictures get its luminance)")
    parser.add_argument("--fraction", type=fraction_arg, default=1.0,
                        help="the share of (eligible) pictures to mark, chosen with --seed (default 1: all)")
    parser.add_argument("--classes", nargs="+", default=None, help="mark only pictures of these class folders")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of pictures under --fraction")
    args = parser.parse_args(argv)
    if not 0.0 < args.size <= 1.0:
        parser.error(f"--size {args.size}: must be a fraction of the side in (0, 1]")
    if any(not 0 <= c <= 255 for c in args.color):
        parser.error(f"--color {' '.join(map(str, args.color))}: each value must be 0-255")
    if args.mark not in BUILTIN_MARKS and not Path(args.mark).is_file():
        parser.error(f"--mark {args.mark}: neither a built-in mark ({', '.join(BUILTIN_MARKS)}) nor a file")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        manifest = mark_folder(src=args.src, dst=args.dst, mark=args.mark, position=tuple(args.position),
                               size=args.size, intensity=args.intensity, color=tuple(args.color),
                               fraction=args.fraction, classes=args.classes, seed=args.seed)
    except MarkError as err:
        fail(str(err))
    where = f"y {args.position[0]:g} x {args.position[1]:g}"
    scope = f"classes {' '.join(args.classes)}" if args.classes else "all classes"
    print(f"marked {manifest['marked']} of {manifest['pictures']} pictures ({scope}) with {args.mark} "
          f"(size {args.size:g}, at {where}, intensity {args.intensity:g}) -> {args.dst} (manifest {args.dst / MANIFEST})")


if __name__ == "__main__":
    main()
