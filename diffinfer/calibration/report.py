"""The report of a coverage study: metrics per analysis, agreement with the exact posterior,
and figures (coverage curves with bands, rank histograms, TARP, predicted vs true, triangles).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffinfer.calibration import metrics
from diffinfer.calibration.study import ANALYSES, load_results
from diffinfer.errors import InputError
from diffinfer.io import write_json_atomic
from diffinfer.parameters import PARAM_NAMES, PriorBox

REPORT_FILE = "report.json"


def analysis_metrics(results: list[dict], box: PriorBox, seed: int = 0) -> dict:
    """Every calibration metric of one analysis over its maps."""
    truths = np.stack([r["truth"] for r in results])
    # MCMC maps may keep different numbers of independent draws: use the common number
    n_draws = min(len(r["draws"]) for r in results)
    draws = np.stack([r["draws"][:n_draws] for r in results])
    means = np.stack([r["mean"] for r in results])
    stds = np.stack([np.sqrt(np.diag(r["cov"])) for r in results])
    flat = [int(r.get("index", k)) for k, (r, s) in enumerate(zip(results, stds, strict=True))
            if not np.all(s > 0)]  # fmt: skip
    if flat:
        raise InputError(
            f"maps {flat} have a zero-width posterior (a standard deviation of 0: all the mass "
            "in one grid cell); delete their result files and rerun the study with a finer "
            "grid (e.g. --set n_fine=24)"
        )
    ranks = metrics.sbc_ranks(draws, truths)
    hpd = np.array([float(r["credibility"]) for r in results])
    tarp = metrics.tarp_statistics(draws, truths, box.low, box.high, seed=seed)
    z = metrics.z_scores(means, stds, truths)
    prior_var = np.asarray(box.width) ** 2 / 12
    rank_tests = metrics.rank_uniformity(ranks, draws.shape[1], seed=seed)
    lp_truth = np.array([float(r["log_pdf_truth"]) for r in results])
    finite = lp_truth[np.isfinite(lp_truth)]
    rank_curves = [
        metrics.uniformity_check(
            metrics.normalised_ranks(ranks[:, j], draws.shape[1], seed), seed=seed
        )
        for j in range(truths.shape[1])
    ]
    out = {
        "n_maps": len(results),
        "hpd_coverage": metrics.uniformity_check(hpd, seed=seed),
        "tarp": {
            **metrics.uniformity_check(tarp, seed=seed),
            "bootstrap": metrics.tarp_bootstrap(tarp, seed=seed),
        },
        "ranks": {
            name: {
                **rank_tests[j],
                "inside_band": rank_curves[j]["inside_band"],
                "max_deviation": rank_curves[j]["max_deviation"],
            }
            for j, name in enumerate(PARAM_NAMES)
        },
        "z_score": dict(zip(PARAM_NAMES, metrics.z_score_summary(z), strict=True)),
        # the truth can lie outside a refined grid (density 0): such maps are counted apart
        "neg_log_prob_truth": float(-np.mean(finite)) if finite.size else None,
        "truth_outside_grid": int(len(results) - finite.size),
        "temperatures": sorted({float(r.get("temperature", 1.0)) for r in results}),
        "contraction": dict(
            zip(
                PARAM_NAMES,
                np.mean(metrics.contraction(stds**2, prior_var), 0).tolist(),
                strict=True,
            )
        ),
        "mean_std": dict(zip(PARAM_NAMES, np.mean(stds, 0).tolist(), strict=True)),
        "mean_evaluations": float(np.mean([float(r["n_evaluations"]) for r in results])),
        "mean_seconds": float(np.mean([float(r["seconds"]) for r in results])),
        "max_edge_mass": float(np.max([float(r["edge_mass"]) for r in results])),
    }
    # the verdict combines four curves and four z-statistics: each curve must lie in its
    # 99 % band and each z-statistic within 3 standard errors, for a family-wise false
    # alarm rate of about 5 % on a calibrated posterior
    out["calibrated"] = bool(
        out["hpd_coverage"]["inside_band_99"]
        and out["tarp"]["inside_band_99"]
        and all(rank_curves[j]["inside_band_99"] for j in range(truths.shape[1]))
        and all(
            abs(v["mean"]) < 3 * v["mean_se"] and abs(v["std"] - 1) < 3 * v["std_se"]
            for v in out["z_score"].values()
        )
    )
    return out


def agreement(results: list[dict], reference: list[dict], n_c2st: int = 10) -> dict:
    """Bias (in units of the reference's std), width ratio and classifier two-sample
    accuracy of one analysis against a reference, on the maps both have."""
    from diffinfer.compare import two_sample_accuracy

    ref = {r["index"]: r for r in reference}
    pairs = [(r, ref[r["index"]]) for r in results if r["index"] in ref]
    if not pairs:
        return {}
    bias = np.array([(r["mean"] - q["mean"]) / np.sqrt(np.diag(q["cov"])) for r, q in pairs])
    ratio = np.array([np.sqrt(np.diag(r["cov"]) / np.diag(q["cov"])) for r, q in pairs])
    c2st = [
        two_sample_accuracy(r["draws"], q["draws"], seed=int(r["index"])) for r, q in pairs[:n_c2st]
    ]
    return {
        "n_maps": len(pairs),
        "bias_mean": dict(zip(PARAM_NAMES, bias.mean(0).tolist(), strict=True)),
        "abs_bias_mean": dict(zip(PARAM_NAMES, np.abs(bias).mean(0).tolist(), strict=True)),
        "width_ratio_mean": dict(zip(PARAM_NAMES, ratio.mean(0).tolist(), strict=True)),
        "c2st_mean": float(np.mean(c2st)),
        "c2st_maps": len(c2st),
    }


def write_report(out: str | os.PathLike, *, figures: bool = True, n_triangles: int = 3) -> dict:
    """Compute the report of the study in ``out`` from its finished results; write
    ``report.json`` and (optionally) the figures; return the report.

    ``report.json`` is strict JSON: a number that is not finite (e.g. the spread of z-scores
    over a single map) is written as null, and the returned report keeps it as NaN.

    Raises
    ------
    DataFileError
        ``out`` holds no ``study.json``, or a result file cannot be read (rerun the study
        to recompute it).
    """
    from diffinfer.io import read_json

    out = Path(out)
    study = read_json(out / "study.json", what="study description")
    results = {a: load_results(out, a) for a in ANALYSES}
    results = {a: r for a, r in results.items() if r}
    box = _study_box(study)
    report = {"study": study, "analyses": {}}
    for a, res in results.items():
        report["analyses"][a] = {
            "label": str(res[0]["label"]),
            **analysis_metrics(res, box, seed=int(study.get("seed", 0))),
        }
        if a != "exact" and "exact" in results:
            report["analyses"][a]["vs_exact"] = agreement(res, results["exact"])
    write_json_atomic(out / REPORT_FILE, report)
    if figures and results:
        from diffinfer.calibration.figures import study_figures

        report["figures"] = study_figures(out, results, report, box, n_triangles=n_triangles)
        write_json_atomic(out / REPORT_FILE, report)
    return report


def _study_box(study: dict) -> PriorBox:
    from diffinfer.diffusion.checkpoint import load_model

    return load_model(study["model"]).field.prior


if __name__ == "__main__":  # python -m diffinfer.calibration.report STUDY_DIR ...
    import sys

    for folder in sys.argv[1:]:
        write_report(folder)
        print(f"rewrote {folder}/report.json and figures")
