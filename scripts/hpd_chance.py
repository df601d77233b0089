"""How far a calibrated posterior's HPD curve strays from the diagonal by chance (docs/nbody.md).

For a calibrated posterior the HPD credibility levels of the truths are uniform, and the
curve's maximum deviation from the diagonal (``max_deviation`` of
:func:`diffinfer.calibration.metrics.uniformity_check`, the statistic the studies report)
still scatters with the number of maps. This draws ``--replicates`` sets of ``n`` uniform
levels for each ``n`` and reports the median, the 90 % and 99 % quantiles and the chance
that it exceeds ``--target``, beside scipy's exact Kolmogorov-Smirnov distribution
(``scipy.stats.kstwo``: the supremum over every level, which the study's grid of levels
can only approach from below).

    python scripts/hpd_chance.py --out docs/data/hpd_chance.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from diffinfer.calibration.metrics import ecdf, uniformity_check
from diffinfer.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def chance(n: int, replicates: int, target: float, seed: int) -> dict:
    """The HPD maximum deviation of ``replicates`` calibrated studies of ``n`` maps."""
    rng = np.random.default_rng(seed)
    z = np.linspace(0, 1, 101)  # the levels uniformity_check uses (ecdf_band's n_points)
    u = rng.uniform(size=(replicates, n))
    d = np.array([np.max(np.abs(ecdf(row, z) - z)) for row in u])
    assert np.isclose(d[0], uniformity_check(u[0])["max_deviation"])  # the same statistic
    return {
        "n_maps": n,
        "replicates": replicates,
        "median": float(np.median(d)),
        "quantile_90": float(np.quantile(d, 0.9)),
        "quantile_99": float(np.quantile(d, 0.99)),
        "p_above_target": float(np.mean(d > target)),
        "p_above_target_se": float(
            np.sqrt(np.mean(d > target) * np.mean(d <= target) / replicates)
        ),
        "ks_median": float(stats.kstwo(n).ppf(0.5)),
        "ks_p_above_target": float(stats.kstwo(n).sf(target)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[300, 400, 900, 1000])
    p.add_argument("--replicates", type=int, default=20000)
    p.add_argument("--target", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "data" / "hpd_chance.json")
    args = p.parse_args()
    rows = [chance(n, args.replicates, args.target, args.seed) for n in args.n]
    for r in rows:
        print(f"{r['n_maps']:5d} maps: median {r['median']:.3f} (KS {r['ks_median']:.3f}), "
              f"90 % {r['quantile_90']:.3f}, 99 % {r['quantile_99']:.3f}; "
              f"P(> {args.target}) = {r['p_above_target']:.3f} ± {r['p_above_target_se']:.3f} "
              f"(KS {r['ks_p_above_target']:.3f})")  # fmt: skip
    write_json_atomic(args.out, {"target": args.target, "seed": args.seed, "rows": rows})


if __name__ == "__main__":
    main()
