"""HPD levels of a study's posteriors on their grid against those of the Gaussian with the
same mean and covariance, per tenth of [0, 1] (docs/nbody.md, "Their own coverage").

A calibrated posterior puts n / 10 maps in each tenth either way; a posterior whose mean and
covariance are right but whose shape is not has uniform Gaussian levels and non-uniform
grid levels.

    .venv/bin/python scripts/hpd_vs_gaussian.py calibration/nbody64-test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from diffinfer.calibration.report import study_results
from diffinfer.io import read_json
from diffinfer.likelihoods.temperature import squared_distances


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path)
    args = p.parse_args()
    study = read_json(args.study / "study.json", what="study description")
    for a, res in study_results(args.study, study).items():
        grid = np.array([float(r["credibility"]) for r in res])
        gauss = 1 - np.exp(-squared_distances(res) / 2)
        print(f"{a} ({len(res)} maps, {len(res) / 10:.0f} expected per tenth)")
        for name, levels in (("grid", grid), ("Gaussian", gauss)):
            counts = np.histogram(levels, bins=10, range=(0, 1))[0]
            chi2, pvalue = stats.chisquare(counts)
            print(
                f"  {name:9s} {' '.join(f'{c:3d}' for c in counts)}   "
                f"chi2 {chi2:5.1f} (9 dof, p = {pvalue:.2g})"
            )


if __name__ == "__main__":
    main()
