"""``torchrun --nproc_per_node 2 shortcutlens-train …`` end to end, killed and resumed.

Two 2-rank runs (gloo, CPU) start side by side: the reference runs uninterrupted; the victim's whole
process group (the torchrun agent and both ranks) gets SIGKILL between two checkpoints and is
relaunched with ``resume=true``. Both ranks of the relaunch resume from the checkpoint rank 0 wrote,
and the run must end exactly like the reference: the same final weights (backbone, pretext head and
the DDP-wrapped lens), optimizer state, logged training loss and probe accuracy; only rank 0 writes
TensorBoard events, and after the resume only for the steps that remained.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import script_env
from test_resume import latest_step, tb_loss_steps

ARGS = ("data=synthetic", "backbone.width=0.125", "trainer.batch_size=8", "probe.untrained=false",
        "probe.max_iter=50", "trainer.progress=false", "seed=5", "device=cpu", "lens=unet", "lens.width=4",
        "trainer.sync_bn=true", "trainer.image_every=0")
EVERY = 4


def torchrun(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "shortcutlens.cli.train", *ARGS, *overrides]


def launch(base: Path, name: str, run_dir: Path, steps: int, *extra: str) -> subprocess.Popen:
    with open(base / f"{name}.log", "w") as log:
        return subprocess.Popen(torchrun(f"run_dir={run_dir}", f"trainer.steps={steps}", f"trainer.ckpt_every={EVERY}",
                                         f"trainer.log_every={EVERY}", *extra),
                                cwd=base, env=script_env(base), stdout=log, stderr=subprocess.STDOUT)


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux ``/proc``)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the process is gone
            continue
        for child in map(int, children):
            out += [child, *descendants(child)]
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the torchrun agent and its ranks, by process id. The ranks run in sessions of their own
    (torchrun starts them so), so killing the agent's process group would leave them training."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("torchrun")
    procs: list[subprocess.Popen] = []
    try:
        for attempt in range(3):
            steps = 16 * 4**attempt  # a machine that finishes before the kill gets a longer run
            ref, victim = base / f"ref{attempt}", base / f"victim{attempt}"
            reference = launch(base, f"ref{attempt}", ref, steps)
            victim_proc = launch(base, f"victim{attempt}", victim, steps)
            procs += [reference, victim_proc]
            killed_at = None
            while victim_proc.poll() is None:
                step = latest_step(victim)
                if step is not None and step < steps:
                    ranks = descendants(victim_proc.pid)
                    kill(victim_proc)
                    killed_at = step
                    break
                time.sleep(0.02)
            if killed_at is None:  # finished (or failed) before it could be killed
                kill(reference)
                if victim_proc.returncode != 0:
                    pytest.fail((base / f"victim{attempt}.log").read_text())
                continue
            deadline = time.monotonic() + 30
            while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:  # gone, not just signalled
                time.sleep(0.01)
            events_before = set((victim / "tb").glob("events.out.tfevents.*"))
            resumed = launch(base, f"resumed{attempt}", victim, steps, "resume=true")
            procs.append(resumed)
            for proc, name in ((reference, "ref"), (resumed, "resumed")):
                assert proc.wait(timeout=400) == 0, (base / f"{name}{attempt}.log").read_text()
            return {"steps": steps, "killed_at": killed_at, "ref": ref, "victim": victim, "events_before": events_before,
                    "log": (base / f"resumed{attempt}.log").read_text()}
        pytest.fail("the 2-rank run always finished before it could be killed")
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill(proc)


def test_two_rank_run_killed_and_resumed_ends_like_an_uninterrupted_one(runs):
    steps, killed_at, ref, victim = runs["steps"], runs["killed_at"], runs["ref"], runs["victim"]
    assert 0 < killed_at < steps and killed_at % EVERY == 0
    # Rank 0 alone logs, and the resumed run logged only the steps after the checkpoint it loaded.
    new_events = sorted(set((victim / "tb").glob("events.out.tfevents.*")) - runs["events_before"])
    assert len({path.name.split(".")[-2] for path in new_events}) == 1  # written by one process (its pid)
    assert tb_loss_steps(new_events) == list(range(killed_at + EVERY, steps + 1, EVERY))
    assert runs["log"].count("run directory:") == 1  # rank 0 alone prints the summary

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, victim))
    assert a["step"] == b["step"] == steps
    for key in ("pretext_acc", "pretext_acc_lensed", "probe_acc"):
        assert a[key] == b[key], key
    for key in ("loss", "acc", "lr", "edit"):
        assert a["train"][key] == b["train"][key], key
    assert a["config"]["trainer"]["sync_bn"] is True

    ca, cb = (torch.load(d / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True) for d in (ref, victim))
    for module in ("backbone", "pretext", "lens"):
        assert ca[module].keys() == cb[module].keys()
        assert not any(k.startswith("module.") for k in ca[module])  # saved unwrapped
        for name, tensor in ca[module].items():
            assert torch.equal(tensor, cb[module][name]), f"{module}.{name}"
    for opt in ("optimizer", "lens_optimizer"):
        for (i, sa), sb in zip(ca[opt]["state"].items(), cb[opt]["state"].values(), strict=True):
            for key, value in sa.items():
                if torch.is_tensor(value):
                    assert torch.equal(value, sb[key]), f"{opt} state {i}.{key}"
