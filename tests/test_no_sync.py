"""The training step never waits for the device: no host-device synchronisation between logging steps.

On a GPU, reading a value back (``.item()``, ``.tolist()``, ``.cpu()``, ``bool(t)``, ``float(t)``) or an
operation whose output shape depends on the data (``nonzero``, boolean-mask indexing) stalls the host
until the device has caught up, and the next step's kernels cannot be queued ahead. The CPU has no such
stall, so this test counts the calls that would cause one: every such ``torch.Tensor`` method is
patched to record its caller while ``Trainer.train_step`` runs. ``fit()`` reads the metrics back once
per logging interval, outside ``train_step``.

Exempt, because they read host memory, not the device: the optimizers' step counters (torch keeps
``state["step"]`` on the host on purpose unless ``capturable``/``fused``) and the epoch's shuffle, which
``DistributedSampler`` draws on the host once per epoch.
"""

from __future__ import annotations

import traceback

import pytest
import torch

from shortcutlens.build import build_components, build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

READ_BACK = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero",
             "masked_select", "unique")
HOST_SHUFFLE = "torch/utils/data/distributed.py"  # DistributedSampler.__iter__: randperm(...).tolist()
CASES = {
    # name: (lens settings or None, trainer settings)
    "no lens": (None, {}),
    "full + feed_raw": ({"mode": "full", "feed_raw": True, "rec_weight": 1.0}, {}),
    "least_likely, budget": ({"mode": "least_likely", "constraint": "budget"}, {"grad_clip": 1.0}),
    "random_wrong": ({"mode": "random_wrong", "constraint": "budget"}, {"channels_last": True}),
    "adafactor, rsqrt": (None, {"optimizer": "adafactor", "schedule": "rsqrt", "grad_clip": 1.0}),
}


def make_trainer(tmp_path, lens: dict | None, settings: dict, pretext: str = "rotation") -> Trainer:
    game = {k: v for k, v in (lens or {}).items() if k in ("mode", "feed_raw", "rec_weight")}
    spec = {
        "data": {"name": "synthetic", "image_size": 16, "num_train": 64, "num_test": 16},
        "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
        "pretext": {"name": pretext, **({"all_rotations": False} if pretext == "rotation" else {})},
        "lens": {"name": "unet", "width": 4, "constraint": (lens or {}).get("constraint", "penalty")} if lens else {"name": "none"},
        "shortcut": {"name": "arrow"},
    }
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                   trainer=TrainerConfig(batch_size=8, steps=100, warmup_steps=2, progress=False, **settings),
                   adversary=AdversaryConfig(**game), probe=ProbeConfig(untrained=False), run_dir=tmp_path,
                   device=torch.device("cpu"))


class SyncCounter:
    """Patches the read-back methods of ``torch.Tensor``; ``calls`` lists ``(method, caller)``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, trainer: Trainer) -> None:
        self.calls: list[tuple[str, str]] = []
        self.active = False
        self.trainer = trainer
        for name in READ_BACK:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        getitem = torch.Tensor.__getitem__

        def masked_getitem(t, index):  # x[mask]: the output's length depends on the data
            indices = index if isinstance(index, tuple) else (index,)
            if self.active and any(torch.is_tensor(i) and i.dtype == torch.bool for i in indices):
                self._record("__getitem__[bool mask]")
            return getitem(t, index)

        monkeypatch.setattr(torch.Tensor, "__getitem__", masked_getitem)

    def host_counters(self) -> set[int]:
        opts = [o for o in (self.trainer.optimizer, self.trainer.lens_optimizer) if o is not None]
        return {id(s["step"]) for o in opts for s in o.state.values() if "step" in s}

    def _record(self, name: str) -> None:
        frame = traceback.extract_stack(limit=3)[0]  # the code that called the patched method
        if HOST_SHUFFLE in frame.filename.replace("\\", "/"):
            return
        self.calls.append((name, f"{frame.filename}:{frame.lineno} {frame.line}"))

    def _wrap(self, name, method):
        def wrapper(t, *args, **kwargs):
            if self.active and id(t) not in self.host_counters():
                self._record(name)
            return method(t, *args, **kwargs)

        return wrapper

    def steps(self, first: int, n: int) -> None:
        for step in range(first, first + n):
            self.active = True
            try:
                self.trainer.train_step(step)
            finally:
                self.active = False


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch, case):
    lens, settings = CASES[case]
    trainer = make_trainer(tmp_path, lens, settings)
    counter = SyncCounter(monkeypatch, trainer)
    counter.steps(0, 3)  # the first steps create optimizer state: they must not sync either
    assert counter.calls == []
    # The metrics stay on the device until fit() reads them at a logging step.
    metrics = trainer.train_step(3)
    assert all(torch.is_tensor(v) and v.dim() == 0 for v in metrics.values())


def test_the_counter_sees_a_read_back_inside_the_step(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, None, {})
    counter = SyncCounter(monkeypatch, trainer)
    loss = trainer.pretext.loss

    def chatty_loss(features, targets):
        out = loss(features, targets)
        if out[0] > 0:  # bool(tensor): a sync on the GPU
            print(f"loss {out[0].item():.3f}")
        return out

    monkeypatch.setattr(trainer.pretext, "loss", chatty_loss)
    counter.steps(0, 1)
    assert [name for name, _ in counter.calls] == ["__bool__", "item"]
    assert all("test_no_sync.py" in where for _, where in counter.calls)
