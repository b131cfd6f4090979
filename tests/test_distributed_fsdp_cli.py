"""``torchrun --nproc_per_node 2 shortcutlens-train trainer.strategy=fsdp …`` end to end, next to the same
run with DDP: sharded training, the lens diagnostics (a collective under FSDP), the checkpoint gathered
whole on rank 0, and rank 0's probe on the gathered weights. The two strategies compute the same
thing, so they must report the same numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import script_env

from shortcutlens.backbones import create_backbone

VIT = {"variant": "Ti/4", "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}
ARGS = ("data=synthetic", "backbone=vit", *(f"+backbone.{k}={v}" if k != "variant" else f"backbone.{k}={v}"
                                            for k, v in VIT.items()),
        "trainer.batch_size=8", "trainer.steps=8", "trainer.log_every=4", "trainer.ckpt_every=4",
        "trainer.image_every=4", "lens=unet", "lens.width=4", "lens.mode=least_likely", "shortcut=arrow",
        "trainer.progress=false", "device=cpu", "probe.max_iter=50", "seed=1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fsdp_cli")
    procs = {}
    for strategy in ("ddp", "fsdp"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "shortcutlens.cli.train", *ARGS, f"trainer.strategy={strategy}", f"run_dir={base / strategy}"]
        with open(base / f"{strategy}.log", "w") as log:
            procs[strategy] = subprocess.Popen(cmd, cwd=base, env=script_env(base), stdout=log, stderr=subprocess.STDOUT)
    try:
        for strategy, proc in procs.items():
            assert proc.wait(timeout=400) == 0, (base / f"{strategy}.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {strategy: base / strategy for strategy in procs}


def test_fsdp_run_reports_what_the_ddp_run_reports(runs):
    ddp, fsdp = (json.loads((runs[s] / "metrics.json").read_text()) for s in ("ddp", "fsdp"))
    assert fsdp["config"]["trainer"]["strategy"] == "fsdp"
    for key in ("pretext_acc", "pretext_acc_lensed", "edit_ratio", "probe_acc", "probe_untrained_acc"):
        assert fsdp[key] == pytest.approx(ddp[key], rel=1e-4, abs=1e-6), key
    for key in ("loss", "acc", "adv_loss", "edit", "eval_acc_raw", "eval_acc_lensed"):
        assert fsdp["train"][key] == pytest.approx(ddp["train"][key], rel=1e-4, abs=1e-6), key
    assert (runs["fsdp"] / "edits" / "step_000008.png").is_file()


def test_fsdp_checkpoint_is_whole_and_loads_into_a_plain_backbone(runs):
    state = torch.load(runs["fsdp"] / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert state["strategy"] == "fsdp" and state["step"] == 8
    plain = create_backbone("vit", img_size=16, in_chans=1, **VIT)
    plain.load_state_dict(state["backbone"])  # strict: every name and shape of the unsharded module
    ddp = torch.load(runs["ddp"] / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    for name, value in ddp["backbone"].items():
        torch.testing.assert_close(state["backbone"][name], value, rtol=1e-4, atol=1e-6)
    # The optimizer state was gathered whole too, keyed by parameter name.
    assert {k for k in state["optimizer"]["state"]} >= {f"backbone.{k}" for k, _ in plain.named_parameters()}
