"""README's "Your own lens objective" runs as printed: one class and one registry entry make a new
``lens.mode`` that trains, and the lens receives that objective's gradient."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from shortcutlens import adversary
from shortcutlens.cli import common

README = Path(__file__).resolve().parents[1] / "README.md"
# The example's debug run, shrunk further for the test machine (the code is the README's, unchanged).
TINY = ["data=synthetic", "data.num_train=32", "data.num_test=16", "pretext.all_rotations=false", "lens.width=4",
        "trainer.batch_size=8", "trainer.steps=2", "trainer.log_every=1", "trainer.image_every=0", "trainer.progress=false",
        "probe.max_iter=5", "device=cpu"]


def example() -> str:
    section = README.read_text().split("### Your own lens objective", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.filterwarnings("ignore:trainer.warmup_steps")
def test_the_readme_lens_objective_example_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    compose = common.compose
    monkeypatch.setattr(common, "compose", lambda overrides: compose([*overrides, *TINY]))
    torch.set_num_threads(1)
    try:
        exec(compile(example(), str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102 (the README's own example, run as written)
        objective = adversary.create_objective("most_likely_wrong", pretext="rotation")
    finally:
        adversary.OBJECTIVES._builders.pop("most_likely_wrong", None)
    mode, probe_acc = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert mode == "most_likely_wrong" and 0.0 <= float(probe_acc) <= 1.0
    assert (tmp_path / "runs" / "most_likely_wrong" / "metrics.json").is_file()
    # What the objective asks of the lens: the most likely class other than the true one.
    logits = torch.tensor([[3.0, 2.0, 0.0, 1.0]])
    pretext = type("Logits", (), {"task_logits": lambda self, features, targets: features})()
    loss = objective.lens_loss(pretext, logits, torch.tensor([0]))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([1])))
