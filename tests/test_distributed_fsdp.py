"""FSDP (``trainer.strategy=fsdp``): two gloo ranks shard parameters, gradients and optimizer state with
FSDP2 on the CPU, train like one process on the combined batch, and checkpoint whole weights.

Same set-up as ``test_distributed.py`` (deterministic views, synchronised BatchNorm, a few steps).
"""

from __future__ import annotations

import pytest
import torch
from test_distributed import VARIANTS, assert_close, make_trainer, run_ranks, run_single, trained

FSDP_VARIANTS = [v for v in VARIANTS if v.startswith("fsdp")]
RESUMED = "fsdp_vit_least_likely"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks(tmp_path_factory.mktemp("fsdp"), FSDP_VARIANTS, resume_variant=RESUMED)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    return run_single(tmp_path_factory.mktemp("single"), FSDP_VARIANTS)


@pytest.mark.parametrize("variant", FSDP_VARIANTS)
def test_fsdp_trains_like_one_process_on_the_combined_batch(ranks, single, variant):
    got = ranks[0][variant]["state"]  # gathered whole on rank 0
    assert_close(got, single[variant], atol=1e-5)
    moved = trained(variant, got)
    for module in ("backbone.", "pretext.") + (("lens.",) if VARIANTS[variant][2] else ()):
        assert any(k.startswith(module) for k in moved), module


@pytest.mark.parametrize("variant", FSDP_VARIANTS)
def test_fsdp_really_shards_every_large_weight(ranks, variant):
    whole = ranks[0][variant]["state"]
    shards = [ranks[r][variant]["local"] for r in range(2)]
    assert shards[0].keys() == shards[1].keys()
    # FSDP2 splits dim 0 (a (1, N, D) position embedding stays whole on rank 0).
    large = [n for n in shards[0] if whole[n].numel() >= 64 and whole[n].shape[0] >= 2]
    assert large
    for name in large:
        assert shards[0][name].numel() + shards[1][name].numel() == whole[name].numel(), name
        assert 0 < shards[0][name].numel() < whole[name].numel(), name


def test_fsdp_checkpoint_holds_whole_weights_and_resumes_exactly(ranks, tmp_path):
    res = ranks[0]["resumed"]
    state = torch.load(res["file"], map_location="cpu", weights_only=True)
    assert state["strategy"] == "fsdp"
    # Whole tensors under the plain modules' names: what the probe and the visualiser load.
    plain = make_trainer(RESUMED, 8, tmp_path)
    for module in ("backbone", "pretext"):
        want = getattr(plain, module).state_dict()
        assert state[module].keys() == want.keys()
        for k, v in state[module].items():
            assert v.shape == want[k].shape, k
    assert res["continued"].keys() == res["resumed"].keys()
    assert any(k.startswith("lens.") for k in res["continued"])
    for name, value in res["continued"].items():
        assert torch.equal(value, res["resumed"][name]), name
