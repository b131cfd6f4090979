"""experiments/edit_ratio_trajectory.py reads the lens's path from train.log and refuses what it cannot read."""
import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "edit_ratio_trajectory", Path(__file__).resolve().parents[1] / "experiments" / "edit_ratio_trajectory.py")
traj = importlib.util.module_from_spec(spec)
spec.loader.exec_module(traj)

LOG = """2026-12-01 00:31:19 step 25/50 loss 4.45 acc 0.1675 lr 0.052 images/s 234.7 edit 0.00896 edit_ratio 0.8588
2026-12-01 00:31:20 evaluating
2026-12-01 00:31:25 step 50/50 loss 3.344 acc 0.7962 lr 0.09998 images/s 241.4 edit 0.02071 edit_ratio 13.5
"""


def test_reads_every_logged_step_and_the_max_and_final_ratio(tmp_path):
    run = tmp_path / "row" / "seed0"
    run.mkdir(parents=True)
    (run / "train.log").write_text(LOG)
    out = tmp_path / "t.json"
    traj.main([str(tmp_path / "row"), "--out", str(out), "--every", "1", "--windows", "1-30", "1-50"])
    got = json.loads(out.read_text())["row/seed0"]
    assert got["log"] == [{"step": 25, "acc": 0.1675, "edit": 0.00896, "edit_ratio": 0.8588},
                          {"step": 50, "acc": 0.7962, "edit": 0.02071, "edit_ratio": 13.5}]
    assert (got["max_edit_ratio"], got["final_edit_ratio"]) == (13.5, 13.5)
    assert got["median_edit_ratio"] == {"1-30": 0.8588, "1-50": (0.8588 + 13.5) / 2}
    with pytest.raises(SystemExit, match="exists"):
        traj.main([str(run), "--out", str(out)])


def test_a_run_without_a_lens_is_refused_with_the_reason(tmp_path):
    (tmp_path / "train.log").write_text("2026-12-01 00:31:19 step 25/50 loss 4.45 acc 0.1675 lr 0.052 images/s 234.7\n")
    with pytest.raises(ValueError, match="no logged step with an edit ratio"):
        traj.read_log(tmp_path)
    with pytest.raises(ValueError, match="step ranges like 1-900"):
        traj.window_medians([{"step": 25, "edit_ratio": 1.0}], ["900"])
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        traj.runs_of(tmp_path / "nothing")
