"""A pretext task from another installed package, registered through the entry-point group
``shortcutlens.pretexts``, is found by name and trains from the Hydra config tree.

The "installed package" is the README's example (examples/plugin_pretext) laid out in ``tmp_path`` as
an installer would: the module plus a ``.dist-info`` folder whose ``entry_points.txt`` is the one its
pyproject.toml declares.
"""

import shutil
import sys
from pathlib import Path

import pytest
import torch

from pretexts import PRETEXTS, Pretext, create_pretext, list_pretexts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_pretext"

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """Install the example plugin into ``tmp_path`` and make the registry scan entry points afresh."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE / "hflip_pretext.py", site / "hflip_pretext.py")
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["shortcutlens.pretexts"]
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist_info / "entry_points.txt").write_text(
        "[shortcutlens.pretexts]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.syspath_prepend(str(site))
    # The registry reads entry points once, lazily: make it look again, and forget the plugin afterwards.
    monkeypatch.setattr(PRETEXTS, "_builders", dict(PRETEXTS._builders))
    monkeypatch.setattr(PRETEXTS, "_entry_points_loaded", False)
    yield entry_points
    sys.modules.pop("hflip_pretext", None)


def test_entry_point_pretext_is_found_by_name(installed_plugin):
    assert installed_plugin == {"hflip": "hflip_pretext:HorizontalFlip"}
    assert "hflip" in list_pretexts()
    task = create_pretext("hflip", num_features=8)
    assert isinstance(task, Pretext) and type(task).__name__ == "HorizontalFlip"
    inputs, targets = task.views(torch.rand(3, 1, 8, 8))
    assert inputs.shape == (6, 1, 8, 8) and targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(inputs[3:], inputs[:3].flip(-1))


def test_unknown_names_still_list_the_plugin(installed_plugin):
    with pytest.raises(ValueError, match="Valid pretexts: .*hflip"):
        create_pretext("hflips", num_features=8)


def test_plugin_trains_from_hydra_by_name(installed_plugin, tmp_path):
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run

    run_dir = tmp_path / "run"
    cfg = compose(["~pretext", "+pretext.name=hflip", "debug=true", "data=synthetic",
                   "trainer.steps=2", "trainer.progress=false", "probe.max_iter=20", "device=cpu", f"run_dir={run_dir}"])
    assert cfg["pretext"] == {"name": "hflip"}
    cfg["run_dir"] = str(run_dir)
    results = run(cfg, str(run_dir))
    assert results["step"] == 2 and 0 <= results["probe_acc"] <= 1
    assert (run_dir / "metrics.json").is_file()
