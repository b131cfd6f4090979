"""Scaling-law fits (recovery of known constants), the frontier, the runs reader and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shortcutlens.cli.scaling import main
from shortcutlens.scaling import fit_power_law, load_runs, pareto_frontier, saturating_power_law

TRUE = {"a": 8e4, "b": 0.35, "c": 0.08, "d": 1e14}  # errors 0.87 -> 0.10 over 1e14..1e19 FLOPs


def synthetic(n: int = 16, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    compute = np.geomspace(1e14, 1e19, n)
    error = saturating_power_law(compute, **TRUE)
    return compute, error * (1 + noise * np.random.default_rng(seed).standard_normal(n))


def test_fit_recovers_known_constants() -> None:
    fit = fit_power_law(*synthetic())
    for k, v in TRUE.items():
        assert getattr(fit, k) == pytest.approx(v, rel=0.05), k
    assert fit.rmse < 1e-6 and fit.n_points == 16 and fit.starts > 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_with_noise_recovers_exponent_and_floor_and_honest_errors(seed: int) -> None:
    fit = fit_power_law(*synthetic(noise=0.005, seed=seed))
    assert fit.b == pytest.approx(TRUE["b"], rel=0.05)
    assert fit.c == pytest.approx(TRUE["c"], rel=0.05)
    for k in ("a", "b", "c"):  # the true value lies within 3 standard errors
        assert fit.stderr[k] is not None and abs(getattr(fit, k) - TRUE[k]) < 3 * fit.stderr[k] + 1e-12, k


def test_pure_power_law_without_shift() -> None:
    compute = np.geomspace(1e10, 1e16, 12)
    error = saturating_power_law(compute, a=30.0, b=0.2, c=0.02, d=0.0)
    fit = fit_power_law(compute, error)
    assert fit.b == pytest.approx(0.2, rel=0.05) and fit.c == pytest.approx(0.02, rel=0.05)
    np.testing.assert_allclose(fit.predict(compute), error, rtol=1e-3)


def test_fit_refuses_too_few_or_bad_points() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        fit_power_law([1, 2, 3], [0.5, 0.4, 0.3])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3, -4], [0.5, 0.4, 0.3, 0.2])


def test_pareto_frontier() -> None:
    compute = [1, 2, 2, 3, 4, 5]
    error = [0.5, 0.6, 0.4, 0.45, 0.3, 0.3]
    assert pareto_frontier(compute, error).tolist() == [True, False, True, False, True, False]


def test_load_runs_csv_json_and_errors(tmp_path) -> None:
    csv_path = tmp_path / "runs.csv"
    csv_path.write_text("model,compute,data_size,error\nvit-ti,1e12,1000,0.5\nmixer-s,2e12,,0.4\n")
    runs = load_runs(csv_path)
    assert runs[0] == {"model": "vit-ti", "compute": 1e12, "data_size": 1000.0, "error": 0.5}
    assert runs[1]["data_size"] is None
    json_path = tmp_path / "runs.json"
    json_path.write_text(json.dumps({"runs": [{"compute": 1.0, "error": 0.2}]}))
    assert load_runs(json_path)[0]["error"] == 0.2
    bad = tmp_path / "bad.csv"
    bad.write_text("flops,error\n1,0.5\n")
    with pytest.raises(ValueError, match="missing compute"):
        load_runs(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_runs(tmp_path / "nope.csv")


def test_cli_writes_png_and_json(tmp_path, capsys) -> None:
    rows = ["compute,data_size,error"]
    compute, error = synthetic(n=8)
    for size, factor in ((1000, 1.0), (100, 1.3)):  # a smaller data set: worse everywhere, off the frontier
        rows += [f"{c:.6e},{size},{e * factor:.8f}" for c, e in zip(compute, error)]
    runs = tmp_path / "runs.csv"
    runs.write_text("\n".join(rows) + "\n")
    main([str(runs), "--out-dir", str(tmp_path / "out"), "--per-data-size"])
    out = json.loads((tmp_path / "out" / "runs_fit.json").read_text())
    assert out["fitted_runs"] == list(range(8))  # exactly the larger data set's runs
    assert out["fit"]["b"] == pytest.approx(TRUE["b"], rel=0.05)
    assert set(out["per_data_size"]) == {"100.0", "1000.0"}
    png = (tmp_path / "out" / "runs_fit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "| b |" in capsys.readouterr().out


def test_cli_error_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "missing.csv")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
