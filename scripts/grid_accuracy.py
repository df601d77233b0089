"""Accuracy of the adaptive grid against a fine one, on maps of a coverage study.

For 20 simulated maps (the test maps of `diffinfer calibrate --model oracle`) and the exact
likelihood, compares grids of several sizes with a 24^2 + 80^2 grid: the largest shift of the
mean (in posterior sigma), relative error of the standard deviations, and the largest
difference of the truth's HPD credibility level; and the evaluations each grid spent.

    python scripts/grid_accuracy.py
"""

from __future__ import annotations

import numpy as np
import torch

from diffinfer.calibration.study import StudyConfig, test_case
from diffinfer.posterior import posterior


def main() -> None:
    torch.set_num_threads(1)
    cases = [test_case(StudyConfig(model="oracle"), i) for i in range(20)]
    refs = [posterior(d, model=None, likelihood="exact", n_coarse=24, n_fine=80).grid()
            for d, _ in cases]  # fmt: skip
    print("| coarse | fine | evaluations | max mean shift [sigma] | max std error | "
          "max credibility difference |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for nc, nf in ((16, 24), (10, 16), (8, 12), (8, 10)):
        rows = []
        for (d, th), a in zip(cases, refs, strict=True):
            b = posterior(d, model=None, likelihood="exact", n_coarse=nc, n_fine=nf).grid()
            sa, sb = np.sqrt(np.diag(a.cov())), np.sqrt(np.diag(b.cov()))
            shift = np.max(np.abs((b.mean() - a.mean()) / sa))
            level = abs(b.credibility(th)[0] - a.credibility(th)[0])
            rows.append([shift, np.max(np.abs(sb / sa - 1)), level, b.n_evaluations])
        r = np.array(rows)
        print(f"| {nc}² | {nf}² | {r[:, 3].mean():.0f} | {r[:, 0].max():.4f} | "
              f"{r[:, 1].max():.4f} | {r[:, 2].max():.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
