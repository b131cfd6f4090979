"""experiments/mark_folder.py: the mark lands where asked, the source is never touched, the folder
layout (and so the labels and the seeded split) is kept, and a bad argument ends in one line."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import mark_folder as mf


def make_folder(root: Path, *, classes: tuple[str, ...] = ("a", "b"), per_class: int = 4, size: int = 16,
                mode: str = "L", split: str | None = None) -> Path:
    """Tiny black pictures, ``root/[split/]<class>/<i>.png``."""
    base = root / split if split else root
    for cls in classes:
        (base / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new(mode, (size, size), 0).save(base / cls / f"{i}.png")
    return root


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def test_mark_lands_where_asked_and_source_is_untouched(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    before = digest(src)
    mf.main([str(src), str(tmp_path / "dst"), "--mark", "dot", "--position", "1", "1", "--size", "0.25"])
    assert digest(src) == before
    image = pixels(tmp_path / "dst" / "a" / "0.png")
    assert image.shape == (16, 16)  # grayscale stays grayscale, same size
    changed = np.argwhere(image != 0)
    # A 4-pixel dot in the bottom-right corner: every changed pixel in the last 4 rows and columns.
    assert changed.size and changed.min(axis=0).tolist() == [12, 12] and changed.max(axis=0).tolist() == [15, 15]
    assert image[13:15, 13:15].min() == 255  # opaque white at full intensity
    manifest = json.loads((tmp_path / "dst" / "mark.json").read_text())
    assert manifest["marked"] == manifest["pictures"] == 8
    assert manifest["marked_pictures"]["a/0.png"] == [12, 12, 4, 4]


def test_corner_bracket_intensity_and_colour(tmp_path: Path) -> None:
    """The L-bracket: a stroke down the left and one along the bottom of its square, at the top-left;
    intensity 0.5 blends half the colour in."""
    src = make_folder(tmp_path / "src", mode="RGB", per_class=1)
    mf.main([str(src), str(tmp_path / "dst"), "--mark", "corner", "--position", "0", "0", "--size", "0.5",
             "--intensity", "0.5", "--color", "200", "0", "0"])
    image = pixels(tmp_path / "dst" / "b" / "0.png")
    assert image.shape == (16, 16, 3)
    painted = image[..., 0] > 0
    assert painted[:8, :2].all() and painted[6:8, :8].all()  # the two strokes (stroke 2 px of an 8-px mark)
    assert not painted[:6, 2:].any() and not painted[8:].any() and not painted[:, 8:].any()
    assert image[0, 0].tolist() == [100, 0, 0]


def test_user_png_alpha_is_respected(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", mode="RGB", per_class=1, size=8)
    logo = np.zeros((4, 4, 4), dtype=np.uint8)
    logo[..., 1] = 255  # green ...
    logo[:2, :, 3] = 255  # ... opaque in its top half only
    Image.fromarray(logo, mode="RGBA").save(tmp_path / "logo.png")
    mf.main([str(src), str(tmp_path / "dst"), "--mark", str(tmp_path / "logo.png"), "--position", "0", "0", "--size", "0.5"])
    image = pixels(tmp_path / "dst" / "a" / "0.png")
    assert (image[:2, :4, 1] == 255).all()
    assert (image[2:, :, :] == 0).all() and (image[:, 4:, :] == 0).all()  # transparent half: nothing drawn


def test_layout_kept_and_only_chosen_pictures_marked(tmp_path: Path) -> None:
    """train/test layout, --classes and --fraction: every file is in the copy under the same path, the
    unchosen ones byte for byte; half of class b's pictures (seeded) carry the mark."""
    src = make_folder(tmp_path / "src", classes=("a", "b"), per_class=4, split="train")
    make_folder(tmp_path / "src", classes=("a", "b"), per_class=2, split="test")
    (src / "README.txt").write_text("not a picture")
    before = digest(src)
    dst = tmp_path / "dst"
    mf.main([str(src), str(dst), "--classes", "b", "--fraction", "0.5", "--seed", "3"])
    after = digest(dst)
    assert digest(src) == before
    assert set(after) == set(before) | {"mark.json"}
    marked = json.loads((dst / "mark.json").read_text())["marked_pictures"]
    assert len(marked) == 3 and all(Path(p).parent.name == "b" for p in marked)  # round(0.5 * 6)
    for path, sha in before.items():
        assert (after[path] != sha) == (path in marked), path
    # the same seed chooses the same pictures
    mf.main([str(src), str(tmp_path / "again"), "--classes", "b", "--fraction", "0.5", "--seed", "3"])
    assert json.loads((tmp_path / "again" / "mark.json").read_text())["marked_pictures"] == marked


@pytest.mark.parametrize("args, needle", [
    (["{src}", "{src}"], "is the source folder or inside it"),
    (["{src}", "{src}/a/marked"], "is the source folder or inside it"),
    (["{src}", "{tmp}"], "contains the source folder"),
    (["{src}", "{tmp}/dst", "--mark", "star"], "neither a built-in mark"),
    (["{src}", "{tmp}/dst", "--size", "2"], "--size 2.0"),
    (["{src}", "{tmp}/dst", "--position", "0.5"], "--position"),
    (["{src}", "{tmp}/dst", "--intensity", "1.5"], "not between 0 and 1"),
    (["{src}", "{tmp}/dst", "--classes", "zebra"], "--classes zebra: no such class folder"),
    (["{tmp}/nowhere", "{tmp}/dst"], "does not exist"),
    (["{src}", "{tmp}/full"], "already exists and is not an empty folder"),
])
def test_bad_arguments_end_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], needle: str) -> None:
    src = make_folder(tmp_path / "src", per_class=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    before = digest(src)
    argv = [a.format(src=src, tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as stop:
        mf.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert digest(src) == before
    assert not (tmp_path / "dst").exists() and (tmp_path / "full" / "x.txt").read_text() == "keep me"


def test_marked_copy_reads_as_the_same_dataset(tmp_path: Path) -> None:
    """shortcutlens reads the copy (mark.json beside the class folders) with the same classes, the same
    seeded split and the same labels; only the marked pixels differ. This is what lets a run trained on
    the marked folder be probed on the clean one."""
    from shortcutlens.data.imagefolder import imagefolder

    src = make_folder(tmp_path / "src", classes=("a", "b", "c"), per_class=5)
    for i, path in enumerate(sorted(src.rglob("*.png"))):  # distinct pictures, so the split can be compared
        Image.new("L", (16, 16), 10 + 10 * i).save(path)
    mf.main([str(src), str(tmp_path / "dst"), "--mark", "dot", "--position", "0", "0"])
    clean = imagefolder(root=str(src), image_size=16, grayscale=True)
    marked = imagefolder(root=str(tmp_path / "dst"), image_size=16, grayscale=True)
    for split in ("train", "val", "test"):
        a, b = clean.split(split), marked.split(split)
        assert a.labels.tolist() == b.labels.tolist()
        assert (a.images[..., 4:, 4:] == b.images[..., 4:, 4:]).all()  # outside the 4-px dot: the same pictures
        assert (a.images[..., :4, :4] != b.images[..., :4, :4]).any()
