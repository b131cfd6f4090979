"""The shortcut benchmark's figures (gain, cue cost, recovery, clean-data effect, paired by seed, with
intervals) against hand arithmetic, and its plan (rows, overrides, where results go)."""

import json
import statistics
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import shortcut_benchmark as sb


def _run(row: str, seed: int, probe: float, *, untrained: float | None = None, acc: float = 0.9) -> dict:
    return {"row": row, "seed": seed, "steps": 500, "pretext_acc": acc, "pretext_acc_clean": None,
            "probe_acc": probe, "probe_untrained_acc": untrained, "edit_ratio": None, "lens_mode": None}


ROT = [r for r in sb.ROWS if r.pretext == "rotation" and not r.secondary]


def test_figures_are_paired_by_seed_with_intervals():
    clean = [0.80, 0.78, 0.82]
    untrained = [0.75, 0.76, 0.74]
    cue = [0.60, 0.50, 0.70]
    lens = [0.75, 0.70]                  # seed 2 missing: recovery uses seeds 0 and 1 only
    clean_lens = [0.79, 0.785, 0.83]
    runs = ([_run("rotation clean / no lens", s, c, untrained=u, acc=0.95) for s, (c, u) in enumerate(zip(clean, untrained))]
            + [_run("rotation arrow / no lens", s, v, acc=1.0) for s, v in enumerate(cue)]
            + [_run("rotation arrow / lens", s, v) for s, v in enumerate(lens)]
            + [_run("rotation clean / lens", s, v) for s, v in enumerate(clean_lens)])
    table, figures = sb.summarise(ROT, runs)
    f = figures[0]
    gains = [100 * (c - u) for c, u in zip(clean, untrained)]
    assert f["gain"]["value"] == pytest.approx(statistics.fmean(gains))
    half = stats.t.ppf(0.975, 2) * statistics.stdev(gains) / 3**0.5
    assert f["gain"]["ci95"] == pytest.approx([statistics.fmean(gains) - half, statistics.fmean(gains) + half])
    assert f["cue_cost"]["value"] == pytest.approx(100 * statistics.fmean(c - q for c, q in zip(clean, cue)))
    assert f["exploit"]["value"] == pytest.approx(5.0)  # 100% with the arrow against 95% clean
    rec = f["recovery"]
    assert rec["seeds"] == [0, 1]
    assert rec["value"] == pytest.approx(((0.75 - 0.60) + (0.70 - 0.50)) / ((0.80 - 0.60) + (0.78 - 0.50)))
    assert rec["per_seed"] == pytest.approx([0.15 / 0.20, 0.20 / 0.28])
    assert rec["ci95"][0] <= rec["value"] <= rec["ci95"][1]
    effect = [100 * (b - a) for a, b in zip(clean, clean_lens)]
    assert f["clean_lens_effect"]["value"] == pytest.approx(statistics.fmean(effect))
    md = sb.markdown(table, figures)
    assert "| rotation | rotation arrow / lens | auto | 500 | 2 |" in md
    assert "100.0 (all 3 seeds)" in md and "± 0.0" not in md  # the arrow row: 100% on every seed


def test_single_seed_cells_say_n_equals_1():
    runs = [_run("rotation clean / no lens", 0, 0.80, untrained=0.76), _run("rotation arrow / no lens", 0, 0.60),
            _run("rotation arrow / lens", 0, 0.75)]
    table, figures = sb.summarise(ROT, runs)
    md = sb.markdown(table, figures)
    assert "80.0 (n = 1)" in md and "+4.0 pt (n = 1)" in md and "75% (n = 1)" in md
    assert "± 0.0" not in md


def test_recovery_interval_brackets_the_point_and_needs_a_positive_gap():
    point, lo, hi = sb.recovery_interval([0.8, 0.8, 0.8, 0.8], [0.6, 0.6, 0.6, 0.6], [0.7, 0.75, 0.65, 0.7])
    assert point == pytest.approx(0.5) and lo <= point <= hi and lo >= 0.25 and hi <= 0.75
    assert sb.recovery_interval([0.8], [0.6], [0.7]) is None
    assert sb.recovery_interval([0.6, 0.6], [0.7, 0.7], [0.7, 0.7]) is None  # the cue did not cost anything


def test_every_pretext_has_four_headline_rows_and_a_cue_that_fits_it():
    for name in sb.PROTOCOLS:
        roles = sorted(r.role for r in sb.ROWS if r.pretext == name and not r.secondary)
        assert roles == ["clean", "clean_lens", "cue", "lens"], name
    assert sb.PROTOCOLS["exemplar"].cue == sb.PROTOCOLS["contrastive"].cue == "instance_code"
    assert "watermark" in sb.PROTOCOLS["exemplar"].controls  # the negative control stays


def test_overrides_compose_and_clean_rows_match_the_cue_rows_channels(tmp_path):
    from shortcutlens.cli.common import compose

    by_name = {r.name: r for r in sb.ROWS}
    clean = compose(sb.overrides(by_name["jigsaw clean / no lens"], seed=3, steps=7, extra=[], out=tmp_path))
    cue = compose(sb.overrides(by_name["jigsaw position_tint / no lens"], seed=3, steps=7, extra=[], out=tmp_path))
    # like with like: both rows train a 3-channel backbone (the clean one through a zero-strength
    # aberration: grayscale replicated), the cue row's tint at the protocol's strength
    assert clean["shortcut"]["name"] == "chromatic_aberration" and clean["shortcut"]["intensity"] == 0.0
    assert cue["shortcut"] == {"name": "position_tint", "intensity": 0.25}
    # the patch tasks' lens may only take colour out: on the clean rows' grey images it has nothing to do
    lens = compose(sb.overrides(by_name["jigsaw position_tint / lens"], seed=3, steps=7, extra=[], out=tmp_path))
    assert lens["lens"]["edit"] == "erase" and lens["lens"]["fill_size"] == 1
    from shortcutlens.data.shortcuts import channels_after, create_shortcut

    assert channels_after(create_shortcut(**dict(clean["shortcut"])), 1) == channels_after(
        create_shortcut(**dict(cue["shortcut"])), 1) == 3
    assert clean["probe"]["untrained"] is True and cue["probe"]["untrained"] is False
    assert clean["probe"]["max_train"] == 0 and clean["probe"]["l2_grid"]  # all 54,000 images, L2 chosen on val
    assert clean["trainer"]["steps"] == 7 and clean["seed"] == 3 and clean["lens"]["name"] == "none"
    lens = compose(sb.overrides(by_name["exemplar instance_code / lens (random_wrong)"], seed=0, steps=7, extra=[],
                                out=tmp_path))
    assert lens["lens"]["name"] == "unet" and lens["shortcut"]["name"] == "instance_code"
    assert lens["lens"]["mode"] == "random_wrong"
    assert lens["trainer"]["batch_size"] == 32 and lens["pretext"]["copies"] == 4


def test_plan_resumes_and_writes_results_under_out_by_default(tmp_path, monkeypatch, capsys):
    def no_pool(_):
        raise RuntimeError("planned only")

    monkeypatch.setattr(sb, "get_context", no_pool)
    with pytest.raises(RuntimeError, match="planned only"):
        sb.main(["--pretexts", "exemplar", "--seeds", "0", "1", "--out", str(tmp_path)])
    # 4 headline rows x 2 seeds + the watermark control (2 rows) and the full-mode lens row on seed 0
    assert "11 runs (7 rows; seeds [0, 1], secondary rows [0]); 0 already finished" in capsys.readouterr().out
    # nothing to run (all collected): tables land in <out>/results, never in the tracked experiments/results
    tracked = {p: p.stat().st_mtime for p in sb.RESULTS.glob("*")}
    sb.main(["--pretexts", "exemplar", "--seeds", "0", "--out", str(tmp_path), "--collect"])
    assert (tmp_path / "results" / "shortcut_benchmark.json").is_file()
    assert {p: p.stat().st_mtime for p in sb.RESULTS.glob("*")} == tracked


def planned_configs(monkeypatch, argv: list[str]) -> dict[str, dict]:
    """Run the benchmark's planning with a pool that records its jobs instead of running them: each
    planned row's composed config."""
    from shortcutlens.cli.common import compose

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
        sb.main(argv)
    return {row.name: compose(sb.overrides(row, seed=seed, steps=steps, extra=extra, out=out))
            for row, seed, steps, extra, out, _ in planned}


def test_lens_extra_reaches_the_lens_rows_only(tmp_path, monkeypatch):
    configs = planned_configs(monkeypatch, ["--pretexts", "rotation", "--no-secondary", "--seeds", "0",
                                            "--lens-extra", "lens.budget=0.01", "--out", str(tmp_path)])
    budgets = {name: cfg["lens"].get("budget") for name, cfg in configs.items()}
    assert budgets == {"rotation clean / no lens": None, "rotation arrow / no lens": None,
                       "rotation arrow / lens": 0.01, "rotation clean / lens": 0.01}


def test_a_protocols_lens_overrides_reach_every_lens_row_of_its_task_only(tmp_path, monkeypatch):
    configs = planned_configs(monkeypatch, ["--pretexts", "contrastive", "rotation", "--seeds", "0", "--out", str(tmp_path)])
    for name, cfg in configs.items():
        budget, lens = cfg["lens"].get("budget"), cfg["lens"]["name"] == "unet"
        if not lens:
            assert budget is None, name
        else:  # contrastive's protocol sets 0.03 on headline and secondary lens rows; rotation keeps 0.02
            assert budget == (0.03 if name.startswith("contrastive") else 0.02), name


def test_cue_extra_reaches_the_headline_cue_rows_only(tmp_path, monkeypatch):
    configs = planned_configs(monkeypatch, ["--pretexts", "contrastive", "--seeds", "0",
                                            "--cue-extra", "shortcut.contrast=0.5", "--out", str(tmp_path)])
    shortcut = {name: cfg["shortcut"] for name, cfg in configs.items()}
    coded = {name for name in shortcut if "instance_code" in name}
    assert coded and all(shortcut[name]["contrast"] == 0.5 for name in coded)
    # the clean rows and the watermark control carry no code, so the override does not reach them
    assert all("contrast" not in shortcut[name] for name in set(shortcut) - coded)
    assert any("watermark" in name for name in shortcut)


def test_a_finished_run_under_other_settings_is_refused_not_counted(tmp_path):
    """The benchmark resumes by finding metrics.json; a run made under another protocol (here 500 steps
    where the protocol now says 7) must not be counted as this protocol's."""
    import json

    from shortcutlens.cli.common import compose

    row = ROT[0]
    saved = compose(sb.overrides(row, seed=0, steps=500, extra=[], out=tmp_path))
    saved["run_dir"] = "/elsewhere"  # a moved run is still the same run
    folder = sb.run_dir(row, 0, tmp_path)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"config": saved, "probe_acc": 0.8, "step": 500}))
    import torch

    threads = torch.get_num_threads()  # run_one sets the worker's thread count
    try:
        with pytest.raises(SystemExit, match=r"trainer.steps: 500 -> 7"):
            sb.run_one((row, 0, 7, [], tmp_path, threads))
        assert sb.run_one((row, 0, 500, [], tmp_path, threads))["probe_acc"] == 0.8  # same settings: counted
    finally:
        torch.set_num_threads(threads)


def test_a_run_made_in_another_memory_layout_is_counted_another_protocol_is_not():
    """channels_last changes how a step is computed, not what: runs collected before the benchmark trained
    channels_last still count; any other changed setting still refuses the run."""
    from shortcutlens.cli.common import compose

    wanted = compose(sb.overrides(ROT[0], seed=0, steps=500, extra=[], out=Path("runs/x")))
    assert wanted["trainer"]["channels_last"] is True
    saved = json.loads(json.dumps(wanted))
    saved["trainer"]["channels_last"] = False
    assert sb.differences(wanted, saved) == []
    saved["trainer"]["augment"] = []
    assert sb.differences(wanted, saved) == ["trainer.augment: [] -> ['flip', 'crop']"]  # saved -> wanted


def test_a_run_another_live_process_trains_is_skipped_not_crashed(tmp_path):
    """Several invocations may share --out: a run directory locked by another live process is skipped
    (its metrics.json is collected later), not trained twice and not an error that stops the rest."""
    import subprocess

    import torch

    from shortcutlens.run_lock import LOCK_NAME

    folder = sb.run_dir(ROT[0], 0, tmp_path)
    holder = ("import sys, time\nfrom shortcutlens.run_lock import RunLock\n"
              "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", holder, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "locked"  # the other process holds the run directory
        threads = torch.get_num_threads()
        try:
            res = sb.run_one((ROT[0], 0, 7, ["data=synthetic"], tmp_path, threads))
        finally:
            torch.set_num_threads(threads)
        assert res["row"] == ROT[0].name and res["seed"] == 0
        assert "is in use" in res["skipped"] and str(other.pid) in res["skipped"]
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written beside the lock
    finally:
        other.kill()
        other.wait()


def test_plan_cost_sums_finished_runs_and_fills_the_rest_with_each_rows_median():
    """plan_cost's bookkeeping on made-up run durations (nothing here is timed): finished runs are summed,
    an unfinished run counts at its row's median, a row with no finished run is named and left out."""
    clean, cue, lens = ROT[0], ROT[1], ROT[2]
    runs = [{"row": clean.name, "seed": 0, "seconds": 100.0}, {"row": clean.name, "seed": 1, "seconds": 300.0},
            {"row": clean.name, "seed": 2, "seconds": 500.0}, {"row": cue.name, "seed": 0, "seconds": 60.0}]
    plan = [(clean, s) for s in range(4)] + [(cue, 0), (cue, 1), (lens, 0)]
    finished, filled_in = 100.0 + 300.0 + 500.0 + 60.0, 300.0 + 60.0  # clean seed 3: median(100, 300, 500)
    assert sb.plan_cost(plan, runs, jobs=2) == {
        "runs": 7, "measured_runs": 4, "measured_seconds": finished, "estimated_runs": 2,
        "estimated_seconds": filled_in, "rows_without_a_finished_run": [lens.name], "jobs": 2,
        "hours_of_jobs_cores": (finished + filled_in) / 2 / 3600,
    }


def test_rows_bring_their_baselines_unless_told_not_to():
    lens = "relative_location position_tint / lens"
    with_baselines = {r.name for r in sb.select_rows(None, [lens], secondary=False)}
    assert with_baselines == {lens, "relative_location clean / no lens", "relative_location position_tint / no lens"}
    assert [r.name for r in sb.select_rows(None, [lens], secondary=False, baselines=False)] == [lens]
    with pytest.raises(SystemExit, match="--no-baselines needs --rows"):
        sb.main(["--no-baselines", "--pretexts", "rotation"])


def test_a_setting_the_protocol_sets_that_an_old_run_lacks_refuses_the_run(tmp_path):
    """A key added to the library after a run was made: left at its default it is no difference (the run
    was made as the default still makes it); set by the protocol (rotation's pretext.hidden_dim=256), an
    old run cannot have had it, so the run is refused rather than counted as the new protocol's."""
    import torch

    from shortcutlens.cli.common import compose

    ov = sb.overrides(ROT[0], seed=0, steps=500, extra=[], out=tmp_path)
    assert "pretext.hidden_dim" in sb.explicit_keys(ov) and "seed" in sb.explicit_keys(ov)
    wanted = compose(ov)
    saved = json.loads(json.dumps(wanted))
    del saved["pretext"]["hidden_dim"], saved["lens"]  # a run from before both keys existed
    assert sb.differences(wanted, saved) == []  # without the overrides' keys: nothing to compare
    assert sb.differences(wanted, saved, explicit=sb.explicit_keys(ov)) == [
        "pretext.hidden_dim: (not in the run's config) -> 256"]  # lens=none is a group choice, not a key
    folder = sb.run_dir(ROT[0], 0, tmp_path)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"config": saved, "probe_acc": 0.8}))
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit, match=r"pretext.hidden_dim: \(not in the run's config\) -> 256"):
            sb.run_one((ROT[0], 0, 500, [], tmp_path, threads))
    finally:
        torch.set_num_threads(threads)
