"""The shortcut benchmark's summary: recovery and clean-data cost paired by seed, against hand arithmetic."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import shortcut_benchmark as sb


def _run(row: str, seed: int, probe: float, steps: int = 500) -> dict:
    return {"row": row, "seed": seed, "steps": steps, "pretext_acc": 1.0, "pretext_acc_clean": None,
            "probe_acc": probe, "edit_ratio": None}


def test_recovery_and_clean_cost_are_paired_by_seed():
    rows = [r for r in sb.ROWS if r.pretext == "rotation" and r.name in
            ("clean / no lens", "arrow / no lens", "arrow / lens (random_wrong)", "clean / lens (random_wrong)")]
    runs = [
        _run("clean / no lens", 0, 0.80), _run("clean / no lens", 1, 0.78),
        _run("arrow / no lens", 0, 0.60), _run("arrow / no lens", 1, 0.50),
        _run("arrow / lens (random_wrong)", 0, 0.75),  # seed 1 missing: only seed 0 is paired
        _run("clean / lens (random_wrong)", 0, 0.79), _run("clean / lens (random_wrong)", 1, 0.785),
    ]
    table = {e["row"]: e for e in sb.summarise(rows, runs)}
    lens = table["arrow / lens (random_wrong)"]
    assert lens["paired_seeds"] == [0]
    assert lens["recovery"] == pytest.approx((0.75 - 0.60) / (0.80 - 0.60))
    clean = table["clean / lens (random_wrong)"]
    assert clean["paired_seeds"] == [0, 1]
    assert clean["clean_cost_points"] == pytest.approx(100 * ((0.80 + 0.78) / 2 - (0.79 + 0.785) / 2))
    assert table["clean / no lens"]["probe_acc"] == pytest.approx(0.79)
    md = sb.markdown(list(table.values()))
    assert "| rotation | arrow / lens (random_wrong) | 500 | 1 |" in md and "75%" in md


def test_row_selection_pulls_in_the_baselines_a_lens_row_needs(tmp_path, monkeypatch, capsys):
    def no_pool(_):
        raise RuntimeError("planned only")

    monkeypatch.setattr(sb, "get_context", no_pool)
    with pytest.raises(RuntimeError, match="planned only"):
        sb.main(["--rows", "jigsaw chromatic aberration / lens (random_wrong)", "--seeds", "0", "--out", str(tmp_path)])
    # the lens row, plus jigsaw's clean and chromatic-aberration rows without a lens (for its recovery)
    assert "3 runs (3 rows; seeds [0]" in capsys.readouterr().out


def test_lens_extra_reaches_the_lens_rows_only(tmp_path, monkeypatch):
    """``--lens-extra lens.budget=…`` must not be handed to the no-lens baselines, whose ``lens=none`` has no
    budget (Hydra would refuse the override), and must reach every lens row's composed config."""
    planned = []

    class Pool:
        def __init__(self, *_, **__):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def imap_unordered(self, _fn, jobs):
            planned.extend(jobs)
            raise RuntimeError("planned only")

    monkeypatch.setattr(sb, "get_context", lambda _: type("Ctx", (), {"Pool": Pool}))
    with pytest.raises(RuntimeError, match="planned only"):
        sb.main(["--rows", "relative_location", "--seeds", "0", "--lens-extra", "lens.budget=0.01", "--out", str(tmp_path)])
    from shortcutlens.cli.common import compose

    budgets = {}
    for row, seed, steps, extra, out, _ in planned:
        cfg = compose(sb.overrides(row, seed=seed, steps=steps, extra=extra, out=out))
        budgets[row.name] = cfg["lens"].get("budget")
    assert budgets == {
        "relative_location clean / no lens": None,
        "relative_location chromatic aberration / no lens": None,
        "relative_location chromatic aberration / lens (random_wrong)": 0.01,
        "relative_location clean / lens (random_wrong)": 0.01,
    }
