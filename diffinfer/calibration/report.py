"""The report of a coverage study: metrics per analysis, agreement with the exact posterior,
and figures (coverage curves with bands, rank histograms, TARP, predicted vs true, triangles).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from diffinfer.calibration import metrics
from diffinfer.calibration.results import ANALYSES, load_results
from diffinfer.errors import InputError
from diffinfer.io import write_json_atomic, write_text_atomic
from diffinfer.parameters import PARAM_NAMES, PriorBox

REPORT_FILE = "report.json"

VERDICT_RESOLUTION = 0.1
"""The coverage deviation a study must be able to detect before its verdict is "calibrated".

Every coverage curve (HPD, TARP, both SBC ranks) is judged against the simultaneous 99 %
band of the ECDF of ``n_maps`` uniform values; with few maps the band is so wide that even a
grossly miscalibrated posterior stays inside it. A study whose checks all pass is reported
as ``"calibrated"`` only when its :func:`min_detectable_deviation` is at most this value
(0.1 in expected coverage, e.g. a 68 % region that really holds 58 % or 78 %; about 300 maps
with the default band), and as ``"not enough maps"`` otherwise.
"""

VERDICT_ALPHA = 0.01
"""The verdict's band: the simultaneous 1 - alpha band of ``inside_band_99``."""

VERDICTS = ("calibrated", "not enough maps", "miscalibrated")

# band edges are multiples of 1/n and the levels multiples of 0.01: compare with a margin
_ROUNDING = 1e-9


@functools.lru_cache(maxsize=512)
def min_detectable_deviation(n_maps: int, seed: int = 0) -> float:
    """The smallest deviation from the diagonal that the verdict's band test surely flags.

    The largest distance, over the interior levels z of :func:`metrics.ecdf_band` (the
    99 % simultaneous band that ``uniformity_check`` reports as ``inside_band_99``, with
    the same seed), from the diagonal to the farther band edge: max over z of
    max(upper(z) - z, z - lower(z)). A coverage curve that deviates from the diagonal by
    more than this at some level lies outside the band there, whatever the level; one that
    deviates by less may pass. A true miscalibration of this size is therefore flagged
    about half the time (the ECDF scatters around it), and smaller ones less often.

    For large n it is about 1.73 / sqrt(n) (the Kolmogorov band, flat in z, would give
    1.63 / sqrt(n); this band is narrower near 0 and 1 and wider in the middle); the band
    edges move in steps of 1 / n, so it is not monotone in n to within about 0.003.

    Parameters
    ----------
    n_maps
        The number of maps (values per coverage curve).
    seed
        The seed of the band's simulation (the study's seed).

    Returns
    -------
    float
        The minimum detectable deviation in expected coverage, in (0, 1].
    """
    z, lower, upper = metrics.ecdf_band(int(n_maps), alpha=VERDICT_ALPHA, seed=int(seed))
    interior = (z > 0) & (z < 1)  # as in the band test: the ends carry no information
    return float(np.max(np.maximum(upper - z, z - lower)[interior]))


def resolves(n_maps: int, resolution: float = VERDICT_RESOLUTION, seed: int = 0) -> bool:
    """Whether a study of ``n_maps`` maps has a minimum detectable deviation <= resolution."""
    return min_detectable_deviation(n_maps, seed) <= resolution + _ROUNDING


def maps_needed(n_maps: int, resolution: float = VERDICT_RESOLUTION, seed: int = 0) -> int:
    """A number of maps whose band resolves ``resolution`` (:func:`resolves`).

    Found by bisection between ``n_maps`` and a number that resolves it, bracketed from
    the 1 / sqrt(n) scaling of :func:`min_detectable_deviation`: at most ``n_maps`` when
    the study already resolves ``resolution``, above it when not. The deviation is not
    quite monotone in n (band edges move in steps of 1 / n), so this is the first such
    number the bisection meets, not necessarily the smallest one (for 0.1 and seed 0, from
    289 to 308 depending on ``n_maps``).

    Raises
    ------
    InputError
        ``n_maps`` < 1 or ``resolution`` not in (0, 1).
    """
    n_maps = int(n_maps)
    if n_maps < 1 or not 0 < resolution < 1:
        raise InputError(f"need n_maps >= 1 and 0 < resolution < 1; got {n_maps}, {resolution}")
    if resolves(n_maps, resolution, seed):
        bad, good = 0, n_maps  # no maps resolve nothing
    else:
        scaled = n_maps * (min_detectable_deviation(n_maps, seed) / resolution) ** 2
        bad, good = n_maps, max(n_maps + 1, int(np.ceil(scaled)))
        while not resolves(good, resolution, seed):
            # the scaling underestimates for few maps (the band is relatively narrower)
            bad, good = good, int(np.ceil(1.3 * good))
    while good - bad > 1:
        mid = (bad + good) // 2
        if resolves(mid, resolution, seed):
            good = mid
        else:
            bad = mid
    return good


def verdict(checks_pass: bool, n_maps: int, seed: int = 0,
            resolution: float = VERDICT_RESOLUTION) -> str:  # fmt: skip
    """The three-state verdict of a study.

    Returns
    -------
    str
        ``"miscalibrated"`` when a check fails; else ``"calibrated"`` when the study
        :func:`resolves` ``resolution`` and ``"not enough maps"`` when it does not.
    """
    if not checks_pass:
        return "miscalibrated"
    return "calibrated" if resolves(n_maps, resolution, seed) else "not enough maps"


def analysis_metrics(results: list[dict], box: PriorBox, seed: int = 0) -> dict:
    """Every calibration metric of one analysis over its maps, and its verdict.

    ``verdict`` is one of :data:`VERDICTS` (see :func:`verdict`), with the
    ``min_detectable_deviation`` of the study's band, the ``verdict_resolution`` it is
    compared with and the ``maps_needed`` to reach it; ``calibrated`` is
    ``verdict == "calibrated"``.
    """
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
        "z_by_posterior_mean_quartile": metrics.z_by_mean_quartile(
            means, stds, truths, PARAM_NAMES
        ),
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
        "cost": _cost(results),
        "max_edge_mass": float(np.max([float(r["edge_mass"]) for r in results])),
    }
    # the verdict combines four curves and four z-statistics: each curve must lie in its
    # 99 % band and each z-statistic within 3 standard errors, for a family-wise false
    # alarm rate of about 5 % on a calibrated posterior; passing them is "calibrated" only
    # when the bands are narrow enough to catch a deviation of VERDICT_RESOLUTION
    checks_pass = bool(
        out["hpd_coverage"]["inside_band_99"]
        and out["tarp"]["inside_band_99"]
        and all(rank_curves[j]["inside_band_99"] for j in range(truths.shape[1]))
        and all(
            abs(v["mean"]) < 3 * v["mean_se"] and abs(v["std"] - 1) < 3 * v["std_se"]
            for v in out["z_score"].values()
        )
    )
    n_maps = len(results)
    out["verdict"] = verdict(checks_pass, n_maps, seed)
    out["calibrated"] = out["verdict"] == "calibrated"
    out["min_detectable_deviation"] = min_detectable_deviation(n_maps, seed)
    out["verdict_resolution"] = VERDICT_RESOLUTION
    out["maps_needed"] = maps_needed(n_maps, seed=seed)
    return out


def _cost(results: list[dict]) -> dict:
    """Per-map cost: wall seconds, likelihood evaluations (theta points) and network calls
    (denoiser evaluations; 0 for the references), median and max over the maps."""
    out = {}
    for key, name in (("seconds", "seconds"), ("n_evaluations", "evaluations"),
                      ("network_calls", "network_calls")):  # fmt: skip
        values = [float(r[key]) for r in results if key in r]
        out[name] = ({"median": float(np.median(values)), "max": float(np.max(values)),
                      "maps": len(values)} if values else None)  # fmt: skip
    return out


def agreement(results: list[dict], reference: list[dict], n_c2st: int = 10) -> dict:
    """Bias (in units of the reference's std), width ratio and classifier two-sample
    accuracy of one analysis against a reference, on the maps both have."""
    from diffinfer.calibration.compare import two_sample_accuracy

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


def study_results(out: str | os.PathLike, study: dict) -> dict[str, list[dict]]:
    """The finished results of a study, per analysis with any: those of the analyses and the
    first ``n_maps`` maps its ``study.json`` (``study``) names. A study may leave other
    results on disk: more maps or other analyses of an earlier run of it."""
    n_maps = study.get("n_maps")
    results = {a: [r for r in load_results(out, a) if n_maps is None or r["index"] < n_maps]
               for a in study.get("analyses", ANALYSES)}  # fmt: skip
    return {a: r for a, r in results.items() if r}


def write_report(out: str | os.PathLike, *, figures: bool = True, n_triangles: int = 3) -> dict:
    """Compute the report of the study in ``out`` from its finished results (of the
    analyses and the first ``n_maps`` maps its ``study.json`` names); write
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
    results = study_results(out, study)
    box = study_box(study)
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
    write_text_atomic(out / REPORT_MARKDOWN, report_markdown(report))
    return report


REPORT_MARKDOWN = "report.md"
"""The report a person reads, written beside ``report.json`` (:func:`report_markdown`)."""

COLUMNS = {
    "maps": "test maps with a finished posterior",
    "verdict": "calibrated: every check passes and the study has enough maps to see a "
    "coverage deviation of 0.1; not enough maps: the checks pass but could miss "
    "it; miscalibrated: a check fails",
    "HPD dev": "largest distance between the coverage of the highest-density regions and "
    "the diagonal (the fraction of maps whose truth lies in the region of "
    "credibility p, against p); 0 for a calibrated posterior",
    "TARP dev": "the same for TARP's random-reference regions (Lemos et al. 2023): it also "
    "sees a posterior that is right in size but wrong in place",
    "z mean, z sd": "mean and spread of (posterior mean - truth) / posterior sd over the maps: "
    "0 and 1 if calibrated; a spread above 1 means intervals too narrow",
    "min dev": "the smallest coverage deviation this many maps surely detect (the width of "
    "the 99 % band); the verdict needs it at or below 0.1",
}
"""What each column of a study's table means (``report.md`` and ``diffinfer calibrate``)."""


def report_markdown(report: dict) -> str:
    """A study's report as Markdown: the settings, one row per analysis with its verdict and
    the checks that failed, what each column means, the agreement with the exact posterior
    where there is one, and the figures."""
    from diffinfer.calibration.verdicts import failed_checks

    study = report["study"]

    def f(value: object, fmt: str) -> str:
        return format(float(value), fmt) if isinstance(value, (int, float)) else "n/a"

    lines = [f"# Calibration study: {study.get('model')}, {study.get('n_maps')} maps", "",
             "Written by `diffinfer calibrate` from `study.json` and `results/`; the numbers "
             "are in `report.json`.", "", "| setting | value |", "|---|---|"]  # fmt: skip
    for key in ("model", "likelihood", "method", "data", "split", "seed", "temperature",
                "noise_sigma", "n_draws"):  # fmt: skip
        lines.append(f"| {key} | {study.get(key)} |")
    lines += ["", "## Verdicts", "",
              "| analysis | maps | verdict | HPD dev | TARP dev | z mean / sd Omega_m "
              "| z mean / sd sigma_8 | min dev | failed checks |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, a in report["analyses"].items():
        z = list(a["z_score"].values())
        failed = "; ".join(failed_checks(a)) or "none"
        lines.append(
            f"| {name} | {a['n_maps']} | {a['verdict']} | "
            f"{f(a['hpd_coverage']['max_deviation'], '.3f')} | "
            f"{f(a['tarp']['max_deviation'], '.3f')} | "
            f"{f(z[0]['mean'], '+.2f')} / {f(z[0]['std'], '.2f')} | "
            f"{f(z[1]['mean'], '+.2f')} / {f(z[1]['std'], '.2f')} | "
            f"{f(a['min_detectable_deviation'], '.3f')} | {failed} |"
        )
    leans = {n: a["z_by_posterior_mean_quartile"] for n, a in report["analyses"].items()
             if a.get("z_by_posterior_mean_quartile")}  # fmt: skip
    if leans:
        lines += ["", "Mean z-score (± s.e.) by quartile of the posterior mean, lowest first: 0 "
                  "in each if calibrated; + then − is a lean towards the prior's centre, which "
                  "TARP sees and the HPD curve does not.", "",
                  "| analysis | Omega_m | sigma_8 |", "|---|---|---|"]  # fmt: skip
        for name, q in leans.items():
            cells = [", ".join(f"{f(e['z_mean'], '+.2f')}±{f(e['z_mean_se'], '.2f')}"
                               for e in q[p]) for p in PARAM_NAMES]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost per map", "", "Median / max over the maps.", "",
              "| analysis | seconds | likelihood evaluations | network calls |",
              "|---|---|---|---|"]  # fmt: skip
    for name, a in report["analyses"].items():
        cost = a.get("cost") or {}
        kinds = ((cost.get(k), fmt) for k, fmt in (("seconds", ".3g"), ("evaluations", ",.0f"),
                                                   ("network_calls", ",.0f")))  # fmt: skip
        cells = [" / ".join(f(c[k], fmt) for k in ("median", "max")) if c else "n/a"
                 for c, fmt in kinds]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Seconds are wall time per map (a map's share of its task where maps were "
              "computed together); network calls are denoiser evaluations (one map through "
              "the network)."]  # fmt: skip
    lines += ["", "Analyses:", ""]
    lines += [f"- **{name}**: {a['label']}" for name, a in report["analyses"].items()]
    lines += ["", "### What the columns mean", ""]
    lines += [f"- **{k}**: {v}." for k, v in COLUMNS.items()]
    versus = {n: a["vs_exact"] for n, a in report["analyses"].items() if a.get("vs_exact")}
    if versus:
        lines += ["", "## Against the exact posterior", "",
                  "| analysis | maps | mean shift (exact sd) | mean abs shift | width ratio "
                  "| C2ST |", "|---|---|---|---|---|---|"]  # fmt: skip
        for name, v in versus.items():
            shift, abs_shift, ratio = (
                ", ".join(f(x, fmt) for x in (v.get(key) or {}).values())
                for key, fmt in (("bias_mean", "+.2f"), ("abs_bias_mean", ".2f"),
                                 ("width_ratio_mean", ".2f")))  # fmt: skip
            lines.append(
                f"| {name} | {v['n_maps']} | {shift} | {abs_shift} | {ratio} | "
                f"{f(v.get('c2st_mean'), '.3f')} ({v.get('c2st_maps')} maps) |"
            )
        lines += [
            "",
            "Shifts and widths per parameter (Omega_m, sigma_8); C2ST: the accuracy "
            "of a classifier telling the two posteriors' draws apart (0.5: the same).",
        ]
    figures = report.get("figures") or []
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"- [{name}](figures/{name})" for name in figures]
    return "\n".join(lines) + "\n"


def study_box(study: dict) -> PriorBox:
    """The prior box of a study: its model's, or the data set's for a study of references
    alone (``model`` "none")."""
    from diffinfer.diffusion.checkpoint import load_model

    if study["model"] == "none":  # the references alone: the data set's prior box
        from diffinfer.fields.grid import FieldConfig
        from diffinfer.io import read_json

        meta = read_json(Path(study["data"]) / "dataset.json", what="data set description")
        return FieldConfig.from_dict(meta["config"]).prior
    return load_model(study["model"]).field.prior


if __name__ == "__main__":  # python -m diffinfer.calibration.report [--markdown] STUDY_DIR ...
    import json
    import sys

    markdown_only = "--markdown" in sys.argv  # report.md from report.json (no results needed)
    for folder in [a for a in sys.argv[1:] if a != "--markdown"]:
        if markdown_only:
            report = json.loads((Path(folder) / REPORT_FILE).read_text())
            write_text_atomic(Path(folder) / REPORT_MARKDOWN, report_markdown(report))
            print(f"wrote {folder}/{REPORT_MARKDOWN}")
            continue
        write_report(folder)
        print(f"rewrote {folder}/report.json, report.md and figures")
