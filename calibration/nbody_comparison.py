"""The comparison on N-body maps: coverage of every analysis and the information each gains
over the Gaussian power-spectrum likelihood (docs/nbody.md).

Reads a finished ``diffinfer calibrate`` study (its report.json and per-map results) and
writes ``comparison.json`` and ``comparison.md`` into it:

- coverage per analysis: HPD, TARP and SBC-rank curves inside their 99 % bands, z-score
  mean and spread, the study's verdict;
- information gain per map, on the maps every analysis finished: the posterior area
  det(Sigma)^(1/2) of the analysis over that of the power-spectrum likelihood; the
  geometric mean over maps (exp of the mean log ratio) with its standard error, the median,
  and the fraction of maps where the analysis is tighter; the same for each parameter's
  standard deviation.

    python calibration/nbody_comparison.py calibration/nbody64-test
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from diffinfer.calibration.report import study_results
from diffinfer.io import read_json, write_json_atomic, write_text_atomic
from diffinfer.parameters import PARAM_NAMES

REFERENCE = "power"


def information_gain(results: dict[str, list[dict]], reference: str = REFERENCE) -> dict:
    """Per-analysis area and width ratios to ``reference`` on the common maps."""
    by_map = {a: {int(r["index"]): r for r in res} for a, res in results.items()}
    common = sorted(set.intersection(*(set(m) for m in by_map.values())))
    out = {"n_common_maps": len(common), "reference": reference}
    if not common or reference not in by_map:
        return out
    ref_cov = np.stack([by_map[reference][i]["cov"] for i in common])
    ref_area = np.sqrt(np.linalg.det(ref_cov))
    for a in by_map:
        if a == reference:
            continue
        cov = np.stack([by_map[a][i]["cov"] for i in common])
        log_ratio = np.log(np.sqrt(np.linalg.det(cov)) / ref_area)
        se = log_ratio.std(ddof=1) / math.sqrt(len(common)) if len(common) > 1 else float("nan")
        entry = {
            "area_ratio_geometric_mean": float(np.exp(log_ratio.mean())),
            "area_ratio_interval_1se": [
                float(np.exp(log_ratio.mean() - se)), float(np.exp(log_ratio.mean() + se))
            ],
            "log_area_ratio_mean": float(log_ratio.mean()),
            "log_area_ratio_se": float(se),
            "area_ratio_median": float(np.exp(np.median(log_ratio))),
            "fraction_tighter": float(np.mean(log_ratio < 0)),
            "std_ratio": {},
        }
        for j, name in enumerate(PARAM_NAMES):
            lr = 0.5 * np.log(cov[:, j, j] / ref_cov[:, j, j])
            entry["std_ratio"][name] = {
                "geometric_mean": float(np.exp(lr.mean())),
                "se_of_log": float(lr.std(ddof=1) / math.sqrt(len(common)))
                if len(common) > 1 else float("nan"),
            }  # fmt: skip
        out[a] = entry
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path)
    args = p.parse_args()
    report = read_json(args.study / "report.json", what="study report")
    results = study_results(args.study, report["study"])
    coverage = {}
    for a, m in report["analyses"].items():
        coverage[a] = {
            "label": m["label"],
            "n_maps": m["n_maps"],
            "hpd_in_band_99": m["hpd_coverage"]["inside_band_99"],
            "hpd_max_deviation": m["hpd_coverage"]["max_deviation"],
            "tarp_in_band_99": m["tarp"]["inside_band_99"],
            "ranks_in_band_99": {k: v["inside_band"] for k, v in m["ranks"].items()},
            "z_mean": {k: [v["mean"], v["mean_se"]] for k, v in m["z_score"].items()},
            "z_std": {k: [v["std"], v["std_se"]] for k, v in m["z_score"].items()},
            "verdict": m["verdict"],
            "mean_std": m["mean_std"],
            "mean_seconds": m["mean_seconds"],
        }
    gain = information_gain(results)
    out = {"study": str(args.study), "coverage": coverage, "information_gain": gain}
    write_json_atomic(args.study / "comparison.json", out)
    text = table(out)
    write_text_atomic(args.study / "comparison.md", text)
    print(text)


def table(out: dict) -> str:
    lines = ["| analysis | maps | HPD in 99 % band (max dev.) | TARP in band | ranks in band "
             "(Ωm, σ8) | z mean Ωm / σ8 | z std Ωm / σ8 | verdict |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for a, c in out["coverage"].items():
        zm = " / ".join(f"{v[0]:+.2f}±{v[1]:.2f}" for v in c["z_mean"].values())
        zs = " / ".join(f"{v[0]:.2f}±{v[1]:.2f}" for v in c["z_std"].values())
        rk = ", ".join("yes" if v else "no" for v in c["ranks_in_band_99"].values())
        lines.append(f"| {a} | {c['n_maps']} | {'yes' if c['hpd_in_band_99'] else 'no'} "
                     f"({c['hpd_max_deviation']:.3f}) | {'yes' if c['tarp_in_band_99'] else 'no'}"
                     f" | {rk} | {zm} | {zs} | {c['verdict']} |")  # fmt: skip
    g = out["information_gain"]
    lines += ["", f"Posterior area det(Σ)^½ relative to the {g['reference']} likelihood on the "
              f"{g['n_common_maps']} maps every analysis finished (geometric mean, ±1 s.e.):",
              "", "| analysis | area ratio | median | tighter on | σ(Ωm) ratio | σ(σ8) ratio |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for a, e in g.items():
        if not isinstance(e, dict):
            continue
        lo, hi = e["area_ratio_interval_1se"]
        sr = [f"{v['geometric_mean']:.3f}" for v in e["std_ratio"].values()]
        lines.append(f"| {a} | {e['area_ratio_geometric_mean']:.3f} ({lo:.3f}–{hi:.3f}) | "
                     f"{e['area_ratio_median']:.3f} | {100 * e['fraction_tighter']:.0f} % | "
                     f"{sr[0]} | {sr[1]} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
