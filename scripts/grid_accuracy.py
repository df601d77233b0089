"""Accuracy of the grids against a fine one, on maps of a coverage study.

For 20 simulated maps (the test maps of `diffinfer calibrate --model oracle`) and the exact
likelihood, compares grids with an adaptive 24^2 + 80^2 grid: adaptive grids of several sizes
and the located grids (aligned with the posterior, or a located box at the prior edge) with
n_aligned^2 cells; the largest shift of the mean (in posterior sigma), relative error of the
standard deviations, and the largest difference of the truth's HPD credibility level; the
evaluations each grid spent (the locator's included) and how many maps used each strategy.

    python scripts/grid_accuracy.py
"""

from __future__ import annotations

import numpy as np
import torch

from diffinfer.calibration.cases import test_case
from diffinfer.calibration.config import StudyConfig
from diffinfer.inference.posterior import posterior


def main() -> None:
    torch.set_num_threads(1)
    cases = [test_case(StudyConfig(model="oracle"), i) for i in range(20)]
    refs = [posterior(d, model=None, likelihood="exact", aligned=False, n_coarse=24,
                      n_fine=80).grid() for d, _ in cases]  # fmt: skip
    print("| grid | evaluations | max mean shift [sigma] | max std error | "
          "max credibility difference | strategies |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    grids = [
        (f"adaptive {nc}² + {nf}²", {"aligned": False, "n_coarse": nc, "n_fine": nf})
        for nc, nf in ((16, 24), (10, 16), (8, 12), (8, 10))
    ]
    grids += [(f"located {n}²", {"aligned": True, "n_aligned": n}) for n in (10, 8, 6)]
    for name, opts in grids:
        rows, used = [], {}
        for (d, th), a in zip(cases, refs, strict=True):
            b = posterior(d, model=None, likelihood="exact", **opts).grid()
            used[b.strategy] = used.get(b.strategy, 0) + 1
            sa, sb = np.sqrt(np.diag(a.cov())), np.sqrt(np.diag(b.cov()))
            shift = np.max(np.abs((b.mean() - a.mean()) / sa))
            level = abs(b.credibility(th)[0] - a.credibility(th)[0])
            rows.append([shift, np.max(np.abs(sb / sa - 1)), level, b.n_evaluations])
        r = np.array(rows)
        strategies = ", ".join(f"{k} {v}" for k, v in sorted(used.items()))
        print(f"| {name} | {r[:, 3].mean():.0f} | {r[:, 0].max():.4f} | {r[:, 1].max():.4f} | "
              f"{r[:, 2].max():.4f} | {strategies} |")  # fmt: skip


if __name__ == "__main__":
    main()
