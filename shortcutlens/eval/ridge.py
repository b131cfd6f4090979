"""Closed-form L2-regularised least squares to ±1 one-hot targets: big_vision's few-shot classifier.

Zhai et al., "Scaling Vision Transformers", CVPR 2022 (few-shot transfer), following big_vision's
``evaluators/fewshot_lsr.py``: features are standardised with the *support* set's mean and (population)
std + 1e-5, a constant feature of 100 is appended so the bias is almost unregularised, targets are
``2·onehot − 1``, and the weights

    (A) N ≥ D:  W = (XᵀX + λI)⁻¹ Xᵀ Y         (B) D > N:  W = Xᵀ (XXᵀ + λI)⁻¹ Y

both come from *one* symmetric eigendecomposition, ``XᵀX = QΛQᵀ`` (D×D) or ``XXᵀ = QΛQᵀ`` (N×N), as
``W = L · diag(1/(Λ + λ)) · R`` with ``L = Q, R = Qᵀ XᵀY`` in (A) and ``L = XᵀQ, R = QᵀY`` in (B). Any number
of λ values then costs one small product each. λ = 1024 (2¹⁰) is big_vision's default.

Shapes: support ``x`` ``(N, D)``, ``y`` ``(N,)``; weights ``(D + 1, C)`` (last row: the bias feature's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shortcutlens.eval.base import eigh

BIAS_CONSTANT = 100.0
DEFAULT_L2 = 1024.0


@dataclass
class RidgeSolution:
    """The eigendecomposition of one support set, ready for any λ."""

    eigs: torch.Tensor   # (K,)  K = D + 1 in branch (A), N in branch (B)
    lhs: torch.Tensor    # (D + 1, K)
    rhs: torch.Tensor    # (K, C)
    mean: torch.Tensor   # (D,) support mean
    std: torch.Tensor    # (D,) support std + 1e-5
    branch: str          # "xtx" (N ≥ D) or "xxt" (D > N)

    def weights(self, l2: float = DEFAULT_L2) -> torch.Tensor:
        """``(D + 1, C)`` ridge weights on standardised features with the bias feature appended."""
        return (self.lhs / (self.eigs + l2)) @ self.rhs

    def scores(self, x: torch.Tensor, l2: float = DEFAULT_L2, *, shift: torch.Tensor | None = None,
               chunk: int = 65536) -> torch.Tensor:
        """Class scores ``(M, C)`` of raw features ``x`` ``(M, D)`` (standardisation folded into the weights).

        ``shift``: a mean already subtracted from ``x`` (centring the test set once keeps float32 exact
        when features have a large offset and the same test set is scored against many supports).
        """
        w = self.weights(l2)
        w_feat = w[:-1] / self.std[:, None]                     # (D, C)
        mean = self.mean if shift is None else self.mean - shift.to(self.mean)
        bias = BIAS_CONSTANT * w[-1] - mean @ w_feat            # (C,)
        w_feat, bias = w_feat.to(x.dtype), bias.to(x.dtype)
        return torch.cat([torch.addmm(bias, part, w_feat) for part in x.split(chunk)])


def solve_ridge(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, branch: str = "auto",
                dtype: torch.dtype = torch.float64) -> RidgeSolution:
    """Standardise, append the bias feature, and eigendecompose the support set ``x`` ``(N, D)``.

    Args:
        branch: ``auto`` (big_vision: ``xtx`` when N ≥ D + 1, else ``xxt``), or force one for testing.
    """
    x = x.to(dtype)
    mean = x.mean(0)
    std = x.std(0, unbiased=False) + 1e-5
    xs = torch.cat([(x - mean) / std, torch.full((x.shape[0], 1), BIAS_CONSTANT, dtype=dtype)], dim=1)
    targets = 2.0 * torch.nn.functional.one_hot(y.long(), num_classes).to(dtype) - 1.0
    n, d = xs.shape
    if branch == "auto":
        branch = "xtx" if n >= d else "xxt"
    if branch == "xtx":
        eigs, q = eigh(xs.T @ xs)
        lhs, rhs = q, q.T @ (xs.T @ targets)
    elif branch == "xxt":
        eigs, q = eigh(xs @ xs.T)
        lhs, rhs = xs.T @ q, q.T @ targets
    else:
        raise ValueError(f"Unknown ridge branch '{branch}'. Valid branches: auto, xtx, xxt")
    return RidgeSolution(eigs=eigs, lhs=lhs, rhs=rhs, mean=mean, std=std, branch=branch)

