"""``shortcutlens-probe``: the Hydra config composes, a checkpoint is evaluated into a table, JSON and
TensorBoard events, evaluator settings can be overridden, and bad input stops with a clear error."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shortcutlens.build import build_components, build_data
from shortcutlens.checkpoint import CheckpointError, save_checkpoint
from shortcutlens.cli import probe
from shortcutlens.cli.common import CONF_DIR

SPEC = {"data": {"name": "synthetic", "num_classes": 6, "num_train": 120, "num_test": 60, "image_size": 16},
        "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
        "pretext": {"name": "rotation"}, "lens": {"name": "unet", "width": 4}, "shortcut": {"name": "arrow"}}



@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    data = build_data(SPEC)
    parts = build_components(SPEC, in_chans=data.channels, image_size=data.image_size)
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    save_checkpoint({"spec": SPEC, "step": 11, "backbone": parts.backbone.state_dict(),
                     "pretext": parts.pretext.state_dict(), "lens": parts.lens.state_dict()}, path)
    return tmp_path / "run"


def config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="probe_app", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def test_config_holds_every_evaluator_default_and_shares_layers():
    cfg = config("checkpoint=x", "layers=[pooled,2]", "fewshot.shots=[1,5]", "linear.layers=[3]")
    assert cfg["fewshot"]["shots"] == [1, 5] and cfg["fewshot"]["layers"] == ["pooled", 2]
    assert cfg["linear"]["layers"] == [3] and cfg["knn"]["k"] == 20 and cfg["episodes"]["episodes"] == 600
    assert cfg["data"] == {"root": None}
    assert config("checkpoint=x", "data=digits")["data"]["name"] == "digits"


def test_probe_writes_table_json_and_tensorboard(checkpoint, tmp_path, capsys):
    run_dir = tmp_path / "probe"
    cfg = config(f"checkpoint={checkpoint}", f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}", "debug=true",
                 "progress=false", "evaluators=[linear,fewshot,knn,episodes,shortcut_audit]", "which=[raw,lensed]",
                 "layers=[pooled,1]", "shortcut_audit.max_images=32", "episodes.adapters=[prototype]")
    results = probe.run(cfg, str(run_dir))
    out = capsys.readouterr().out
    assert "linear/raw/pooled/top1" in out and "fewshot/lensed/layer1/5shot" in out
    saved = json.loads((run_dir / "probe.json").read_text())
    assert saved["source"]["step"] == 11 and saved["source"]["spec"]["backbone"]["name"] == "resnet"
    assert saved["config"]["evaluators"] == ["linear", "fewshot", "knn", "episodes", "shortcut_audit"]
    assert saved["evaluators"]["fewshot"]["settings"]["seeds"] == 1  # debug shrank it
    assert saved["evaluators"]["linear"]["settings"]["layers"] == ["pooled", 1]
    assert set(saved["evaluators"]["episodes"]["metrics"]) >= {"episodes/prototype/lensed/layer1/acc"}
    assert results["cache"]["hits"] > 0  # the evaluators shared their features
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "probe.md").is_file()
    # resume: the evaluators already done are not run again
    again = probe.run({**cfg, "resume": True}, str(run_dir))
    assert again["evaluators"]["knn"] == saved["evaluators"]["knn"]


def test_clear_errors(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        probe.run(config(f"checkpoint={tmp_path / 'missing'}", "progress=false"), str(tmp_path / "p"))
    with pytest.raises(ValueError, match="Valid evaluators"):
        probe.run(config(f"checkpoint={checkpoint}", "evaluators=[nope]", "progress=false", "cache=false"),
                  str(tmp_path / "p"))
