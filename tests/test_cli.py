"""``shortcutlens-train`` as a user meets it: a debug run end to end, and one clear message (no
traceback) for the mistakes a user makes on the command line.

The four commands start together in a module-scoped fixture (they are independent, and the 2-core
CI machine would otherwise spend most of the time waiting on Python start-up); each test then
checks its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import script_env, train_command

CONSOLE_SCRIPT = Path(sys.executable).with_name("shortcutlens-train")


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=script_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("cli")
    (base / "empty").mkdir()
    debug_cmd = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.is_file() else train_command()[:3]
    procs = {
        "debug": start([*debug_cmd, "debug=true", "data=synthetic", f"run_dir={base / 'debug'}"], base),
        "bad_key": start(train_command("data=synthetic", "trainer.stepz=3", f"run_dir={base / 'bad_key'}"), base),
        "bad_backbone": start(train_command("data=synthetic", "backbone.name=nope", f"run_dir={base / 'bad_name'}"), base),
        "no_data": start(train_command("data=cifar10", f"data.root={base / 'empty'}", f"run_dir={base / 'no_data'}"), base),
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return {"base": base, **results}


def test_unknown_override_names_the_key(commands: dict) -> None:
    rc, _, err = commands["bad_key"]
    assert rc != 0
    assert "stepz" in err and "trainer" in err
    assert "Traceback" not in err
    assert not (commands["base"] / "bad_key" / "metrics.json").exists()


def test_unknown_component_name_is_one_error_line(commands: dict) -> None:
    from shortcutlens import list_backbones

    rc, _, err = commands["bad_backbone"]
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: Unknown backbone 'nope'. Valid backbones: " + ", ".join(list_backbones())]



def test_missing_data_is_one_error_line_saying_where_and_how(commands: dict) -> None:
    rc, _, err = commands["no_data"]
    assert rc == 2, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: cifar10 not found")
    assert str(commands["base"] / "empty") in line and "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in line


def test_debug_run_end_to_end(commands: dict) -> None:
    rc, out, err = commands["debug"]
    assert rc == 0, err
    run_dir = commands["base"] / "debug"
    assert f"run directory: {run_dir}" in out

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["probe_acc"] <= 1.0 and 0.0 <= metrics["pretext_acc"] <= 1.0
    assert metrics["probe_acc"] > 0.5  # four classes, linearly decodable from the pixels: far above chance
    assert metrics["step"] == 10 and "loss" in metrics["train"]
    # The full resolved config travels with the numbers, debug's shrinking included.
    config = metrics["config"]
    assert config["data"]["name"] == "synthetic" and config["backbone"]["name"] == "resnet"
    assert config["trainer"]["steps"] == 10 and config["run_dir"] == str(run_dir)
    assert "probe_untrained_acc" not in metrics  # debug skips the untrained probe

    state = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 10 and state["spec"]["backbone"]["name"] == "resnet"
    assert state["backbone"] and state["pretext"]["head.weight"].shape[0] == 4

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = list((run_dir / "tb").glob("**/events.out.tfevents.*"))
    assert events
    tags = {v.tag for path in events for e in EventFileLoader(str(path)).Load() for v in e.summary.value}
    assert {"train/loss", "train/acc", "train/lr", "hparam/probe_acc"} <= tags
