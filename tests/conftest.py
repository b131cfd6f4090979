"""Shared helpers: a data environment where nothing is installed, and how to launch the console scripts.

The test process and its subprocesses use one thread each (``OMP_NUM_THREADS=1`` for subprocesses):
CPU training is then bitwise reproducible across processes (the resume test relies on it) and runs
side by side share the 2-core CI machine without oversubscribing it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# One intra-op thread for the whole suite. CI has 2 cores, often shared with other jobs; with more
# runnable threads than cores, OpenMP's spinning workers make these small tensors many times slower
# (measured here: the unit tests took 71 s with torch's default of 2 threads, 9 s with 1).
torch.set_num_threads(1)


def script_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a console-script subprocess: one thread, no user data or cache leaking in."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONHASHSEED="0",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("SHORTCUTLENS_DATA", None)
    return env


def run_main(main: Callable[[], object], capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run a console script's ``main`` in this process with ``args`` as its command line (faster than a
    subprocess, and a test can patch the library): ``(exit status, stdout, stderr)``."""
    old = sys.argv
    sys.argv = ["shortcutlens", *args]
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def train_command(*overrides: str) -> list[str]:
    """``shortcutlens-train`` with ``overrides``, run by this interpreter (works without a PATH entry)."""
    return [sys.executable, "-m", "shortcutlens.cli.train", *overrides]


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every place a data source looks (``$SHORTCUTLENS_DATA``, ``~/.cache``, the Debian folder)
    at empty folders under ``tmp_path``; returns an empty folder to pass as ``root``."""
    from shortcutlens.data import fashion_mnist

    for name in ("root", "home", "cache", "env_data"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SHORTCUTLENS_DATA", str(tmp_path / "env_data"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian" / "fashion-mnist")
    return tmp_path / "root"
