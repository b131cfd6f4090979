"""Benchmark of the evaluation suite's two solvers on realistic feature sizes (measured, not
assumed: docs/architecture.md).

1. Few-shot ridge (big_vision's closed form, ``shortcutlens.eval.fewshot``) on 50,000 × 768 training
   features, 10 classes, k ∈ {1, 5, 10, 25} × 3 seeds, scored on 10,000 test features. Target: < 2 s
   on 2 cores.
2. Linear probe (``shortcutlens.eval.linear``, whitened L-BFGS in torch) on 60,000 × 512 features next
   to scikit-learn's ``LogisticRegression`` on the *same* standardised features and the *same*
   objective (``C = 1 / (l2 · N)``), in the same run. Target: accuracy within ±0.3 points, faster.

Features are real: Fashion-MNIST images (60,000 train / 10,000 test, the Debian package
``dataset-fashion-mnist`` or ``data.root``) through a fixed random ReLU layer, ``relu(x·P + b)`` with
``P`` Gaussian — correlated, non-separable features like a network's (about 85% linearly decodable).
Without Fashion-MNIST a Gaussian-mixture stand-in of the same shape is used and the table says so.

    .venv/bin/python experiments/bench_eval.py                    # the numbers in the README
    .venv/bin/python experiments/bench_eval.py --converged        # also sklearn run to convergence
    .venv/bin/python experiments/bench_eval.py --debug            # tiny sizes, seconds

Prints a Markdown table and writes ``experiments/results/bench_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from shortcutlens.eval.fewshot import DEFAULT_SHOTS, fewshot_accuracies
from shortcutlens.eval.linear import LinearEvaluator, accuracy, fit_logistic, standardise

RESULTS = Path(__file__).resolve().parent / "results" / "bench_eval.json"


def load_features(dim: int, *, n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(train_x (n_train, dim), train_y, test_x (n_test, dim), test_y, source name)``."""
    g = torch.Generator().manual_seed(seed)
    try:
        from shortcutlens.data import create_dataset

        data = create_dataset("fashion_mnist", image_size=28, val_fraction=0.0)
        images = data.train.images[:n_train].flatten(1).float() / 255.0
        test_images = data.test.images[:n_test].flatten(1).float() / 255.0
        proj = torch.randn(images.shape[1], dim, generator=g) / images.shape[1] ** 0.5
        bias = 0.1 * torch.randn(dim, generator=g)
        return (torch.relu(images @ proj + bias), data.train.labels[:n_train], torch.relu(test_images @ proj + bias),
                data.test.labels[:n_test], "fashion_mnist random-ReLU features")
    except FileNotFoundError:
        centres = torch.randn(10, dim, generator=g) * 0.35
        ytr, yte = torch.randint(0, 10, (n_train,), generator=g), torch.randint(0, 10, (n_test,), generator=g)
        return (centres[ytr] + torch.randn(n_train, dim, generator=g), ytr, centres[yte] + torch.randn(n_test, dim, generator=g),
                yte, "Gaussian mixture (Fashion-MNIST not found)")


def bench_fewshot(args: argparse.Namespace) -> dict:
    xtr, ytr, xte, yte, source = load_features(768, n_train=args.fewshot_train, n_test=args.test)
    start = time.perf_counter()
    accs = fewshot_accuracies(xtr, ytr, xte, yte, num_classes=10, shots=DEFAULT_SHOTS, seeds=[0, 1, 2])
    seconds = time.perf_counter() - start
    return {"features": source, "train_shape": list(xtr.shape), "test_shape": list(xte.shape), "seconds": seconds,
            "fits": len(DEFAULT_SHOTS) * 3,
            "accuracy": {f"{k}shot": [float(np.mean(v)), float(np.std(v, ddof=1))] for (k, _), v in accs.items()}}


def bench_linear(args: argparse.Namespace) -> dict:
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte, source = load_features(512, n_train=args.linear_train, n_test=args.test, seed=1)
    xs, xt = standardise(xtr, xte)
    n = xs.shape[0]
    out: dict = {"features": source, "train_shape": list(xs.shape), "test_shape": list(xt.shape), "l2": args.l2,
                 "sklearn_C": 1.0 / (args.l2 * n), "rows": []}
    iters = LinearEvaluator().max_iter
    start = time.perf_counter()
    model = fit_logistic(xs, ytr, num_classes=10, l2=args.l2, max_iter=iters, dtype=torch.float32)
    out["rows"].append({"method": f"shortcutlens (whitened L-BFGS, float32, {iters} it)",
                        "seconds": time.perf_counter() - start, "accuracy": accuracy(model, xt, yte)})
    runs = [("sklearn LogisticRegression (lbfgs, defaults: max_iter=100)", 100)]
    if args.converged:
        runs.append(("sklearn LogisticRegression (lbfgs, max_iter=2000, converged)", 2000))
    for label, max_iter in runs:
        clf = LogisticRegression(C=1.0 / (args.l2 * n), max_iter=max_iter)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.fit(xs.numpy(), ytr.numpy())
        seconds = time.perf_counter() - start
        acc = float((clf.predict(xt.numpy()) == yte.numpy()).mean())
        out["rows"].append({"method": label, "seconds": seconds, "accuracy": acc, "iterations": int(np.max(clf.n_iter_)),
                            "converged": not any("converge" in str(w.message).lower() for w in caught)})
    return out


def markdown(results: dict) -> str:
    fs, lin = results["fewshot"], results["linear"]
    lines = ["| benchmark | method | time (s) | accuracy (%) |", "|---|---|---|---|"]
    shots = ", ".join(f"{k} {100 * m:.1f}±{100 * s:.1f}" for k, (m, s) in fs["accuracy"].items())
    lines.append(f"| few-shot ridge {fs['train_shape'][0]:,}×{fs['train_shape'][1]}, {fs['fits']} fits | "
                 f"closed form, λ=1024 | {fs['seconds']:.2f} | {shots} |")
    ours = lin["rows"][0]
    for row in lin["rows"]:
        note = "" if "converged" not in row else f" ({row['iterations']} it{'' if row['converged'] else ', not converged'})"
        speed = "" if row is ours else f"; {row['seconds'] / ours['seconds']:.1f}× ours"
        lines.append(f"| linear probe {lin['train_shape'][0]:,}×{lin['train_shape'][1]}, l2={lin['l2']:g} | "
                     f"{row['method']}{note} | {row['seconds']:.1f}{speed} | {100 * row['accuracy']:.2f} |")
    lines.append(f"\nfeatures: {fs['features']}; machine: {results['machine']['cpus']} CPU cores, "
                 f"{results['machine']['torch_threads']} torch threads, torch {results['machine']['torch']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fewshot-train", type=int, default=50_000)
    parser.add_argument("--linear-train", type=int, default=60_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--converged", action="store_true", help="also run sklearn to convergence (slow)")
    parser.add_argument("--debug", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.debug:
        args.fewshot_train, args.linear_train, args.test = 2000, 2000, 500
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "python": platform.python_version(), "processor": platform.processor()}}
    results["fewshot"] = bench_fewshot(args)
    results["linear"] = bench_linear(args)
    table = markdown(results)
    print(table)
    results["table"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
