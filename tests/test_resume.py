"""Resume after a real kill: ``shortcutlens-train`` is killed with SIGKILL between two checkpoints, rerun
with ``resume=true``, and must end exactly where an uninterrupted run with the same seed ends —
same final weights, same pretext and probe accuracy, same last logged training loss.

Both variants (no lens; a U-Net lens, whose state and optimizer must come back too) run at once: the
uninterrupted reference runs side by side with the run that gets killed, and each resumed run starts
as soon as its kill is done (one thread per process; start-up dominates these tiny runs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import script_env, train_command

BASE = ("data=synthetic", "backbone.width=0.125", "trainer.batch_size=16", "probe.untrained=false",
        "trainer.progress=false", "seed=3", "device=cpu")
VARIANTS = {
    # steps, checkpoint/log interval, extra overrides
    "plain": (30, 10, ()),
    "unet": (16, 4, ("lens=unet", "lens.width=8")),
}


def latest_step(run_dir: Path) -> int | None:
    path = run_dir / "checkpoints" / "latest.pt"
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except (FileNotFoundError, RuntimeError, EOFError):  # not there yet
        return None


def tb_loss_steps(paths: list[Path]) -> list[int]:
    """Steps at which ``train/loss`` was logged in the given TensorBoard event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in paths:
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for v in event.summary.value if v.tag == "train/loss"]
    return sorted(steps)


@dataclass
class Trial:
    """One variant's three runs: the reference, the one that gets killed, and its resumption."""

    variant: str
    attempt: int
    base: Path
    steps: int = 0
    every: int = 0
    args: tuple[str, ...] = ()
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    killed_at: int | None = None
    events_before: set[Path] = field(default_factory=set)
    failure: str | None = None

    @property
    def ref_dir(self) -> Path:
        return self.base / f"{self.variant}{self.attempt}_ref"

    @property
    def run_dir(self) -> Path:
        return self.base / f"{self.variant}{self.attempt}_killed"

    def launch(self, name: str, *extra: str) -> None:
        run_dir = self.ref_dir if name == "reference" else self.run_dir
        log = open(self.base / f"{self.variant}{self.attempt}_{name}.log", "w")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(train_command(*self.args, f"run_dir={run_dir}", *extra), cwd=self.base,
                                            env=script_env(self.base), stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child holds its own copy

    def output(self, name: str) -> str:
        return (self.base / f"{self.variant}{self.attempt}_{name}.log").read_text()


def start(base: Path, variant: str, attempt: int) -> Trial:
    base_steps, every, extra = VARIANTS[variant]
    steps = base_steps * 4**attempt  # a machine fast enough to finish before the kill gets a longer run
    trial = Trial(variant, attempt, base, steps, every,
                  (*BASE, *extra, f"trainer.steps={steps}", f"trainer.ckpt_every={every}", f"trainer.log_every={every}"))
    trial.launch("reference")
    trial.launch("victim")
    return trial


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trial]:
    base = tmp_path_factory.mktemp("resume")
    out = {v: start(base, v, 0) for v in VARIANTS}
    waiting = set(VARIANTS)  # victims not yet killed
    try:
        while waiting:
            for v in sorted(waiting):
                trial = out[v]
                victim = trial.procs["victim"]
                if victim.poll() is not None:  # ended before it could be killed
                    waiting.discard(v)
                    trial.procs["reference"].kill()
                    trial.procs["reference"].wait()
                    if victim.returncode != 0:
                        trial.failure = f"training failed:\n{trial.output('victim')}"
                    elif trial.attempt == 2:
                        trial.failure = "the training run always finished before it could be killed"
                    else:
                        out[v] = start(base, v, trial.attempt + 1)
                        waiting.add(v)
                    continue
                step = latest_step(trial.run_dir)
                if step is not None and step < trial.steps:
                    os.kill(victim.pid, signal.SIGKILL)
                    victim.wait()
                    waiting.discard(v)
                    trial.killed_at = step
                    trial.events_before = set((trial.run_dir / "tb").glob("events.out.tfevents.*"))
                    trial.launch("resumed", "resume=true")
            time.sleep(0.02)
        for trial in out.values():
            for proc in trial.procs.values():
                proc.wait(timeout=400)
    finally:
        for trial in out.values():
            for proc in trial.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_resume_after_sigkill_matches_an_uninterrupted_run(trials: dict[str, Trial], variant: str) -> None:
    trial = trials[variant]
    if trial.failure:
        pytest.fail(trial.failure)
    steps, every, run_dir, ref_dir = trial.steps, trial.every, trial.run_dir, trial.ref_dir
    killed_at = trial.killed_at
    assert trial.procs["victim"].returncode == -signal.SIGKILL
    assert killed_at is not None and 0 < killed_at < steps and killed_at % every == 0
    assert trial.procs["resumed"].returncode == 0, trial.output("resumed")
    assert trial.procs["reference"].returncode == 0, trial.output("reference")

    # It really continued: the resumed process logged only the steps after the checkpoint it loaded.
    new_events = sorted(set((run_dir / "tb").glob("events.out.tfevents.*")) - trial.events_before)
    assert tb_loss_steps(new_events) == list(range(killed_at + every, steps + 1, every))

    ref = json.loads((ref_dir / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got["step"] == ref["step"] == latest_step(run_dir) == steps
    for key in ("pretext_acc", "probe_acc", "pretext_acc_lensed"):
        assert got.get(key) == ref.get(key), key
    for key in ("loss", "acc", "lr"):  # means over the last logging window: a sharp fingerprint
        assert got["train"][key] == ref["train"][key], key

    a = torch.load(ref_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    modules = ["backbone", "pretext"] + (["lens"] if variant == "unet" else [])
    assert sorted(k for k in a if k in ("backbone", "pretext", "lens")) == sorted(modules)
    for module in modules:
        assert a[module].keys() == b[module].keys()
        for name, tensor in a[module].items():
            assert torch.equal(tensor, b[module][name]), f"{module}.{name} differs after resume"
    # Momentum (and the lens's Adam moments): optimizer state was carried over, not rebuilt.
    for opt in ["optimizer"] + (["lens_optimizer"] if variant == "unet" else []):
        for (i, sa), sb in zip(a[opt]["state"].items(), b[opt]["state"].values(), strict=True):
            for key, value in sa.items():
                if torch.is_tensor(value):
                    assert torch.equal(value, sb[key]), f"{opt} state {i}.{key} differs"
