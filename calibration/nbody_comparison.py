"""The comparison on N-body maps: coverage of every analysis and the information each gains
over the Gaussian power-spectrum likelihood (docs/nbody.md).

Reads a finished ``diffinfer calibrate`` study (its report.json and per-map results) and
writes ``comparison.json`` and ``comparison.md`` into it:

- coverage per analysis: HPD, TARP and SBC-rank curves inside their 99 % bands, z-score
  mean and spread, the study's verdict;
- the same draws checked by code no one here wrote: sbi's ``check_sbc`` (Kolmogorov–Smirnov
  p-value of each parameter's ranks, and the C2ST accuracy of the ranks against uniform
  ones) and TARP's expected coverage from the ``tarp`` package, summarised by sbi's
  ``check_tarp`` (area to the curve and KS p-value);
- information gain per map, on the maps every analysis finished: the posterior area
  det(Sigma)^(1/2) of the analysis over that of the power-spectrum likelihood (and over
  that of NPE on P(k) + CNN, when the study has it); the
  geometric mean over maps (exp of the mean log ratio) with its standard error, the median,
  and the fraction of maps where the analysis is tighter; the same for each parameter's
  standard deviation.

    python calibration/nbody_comparison.py calibration/nbody64-test

``--one-per-box`` keeps the first map of each box (maps of one box share their θ: the
slabs and axes of one simulation are not independent, the coverage bands assume they
are) and recomputes the coverage on those maps; ``--pool STUDY`` adds the maps of another
study of the same analyses (e.g. the validation split of a study of references, whose
boxes are other cosmologies). Either writes ``comparison-<name>.{json,md}``:

    python calibration/nbody_comparison.py calibration/nbody64-references --one-per-box \
        --pool calibration/nbody64-references-validation --name one-per-box
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from diffinfer.calibration.metrics import z_by_mean_quartile
from diffinfer.calibration.report import analysis_metrics, study_box, study_results
from diffinfer.io import read_json, write_json_atomic, write_text_atomic
from diffinfer.parameters import PARAM_NAMES

REFERENCE = "power"
#: The analyses the areas are compared with, when the study has them.
REFERENCES = (REFERENCE, "npe")


def information_gain(results: dict[str, list[dict]], reference: str = REFERENCE) -> dict:
    """Per-analysis area and width ratios to ``reference`` on the common maps."""
    by_map = {a: {int(r["index"]): r for r in res} for a, res in results.items()}
    common = sorted(set.intersection(*(set(m) for m in by_map.values())))
    out = {"n_common_maps": len(common), "reference": reference, "maps": common}
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
                float(np.exp(log_ratio.mean() - se)),
                float(np.exp(log_ratio.mean() + se)),
            ],
            "log_area_ratio_mean": float(log_ratio.mean()),
            "log_area_ratio_se": float(se),
            "area_ratio_median": float(np.exp(np.median(log_ratio))),
            "fraction_tighter": float(np.mean(log_ratio < 0)),
            "log_area_ratio_per_map": log_ratio.tolist(),
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


def z_corrected(gain: dict, coverage: dict) -> None:
    """Add to each analysis of ``gain`` its area ratio after each side's z-spread correction:
    every width scaled by its parameter's z-score spread over the maps (what would make the
    spread 1), so that no gain comes from overconfidence. The log ratio's s.e. adds the z
    spreads' relative s.e. in quadrature."""
    ref = gain["reference"]
    if ref not in coverage:
        return
    for a, e in gain.items():
        if not isinstance(e, dict) or a not in coverage:
            continue
        log_factor, var = 0.0, e["log_area_ratio_se"] ** 2
        for side, sign in ((a, 1.0), (ref, -1.0)):
            for std, std_se in coverage[side]["z_std"].values():
                log_factor += sign * math.log(std)
                var += (std_se / std) ** 2
        mean, se = e["log_area_ratio_mean"] + log_factor, math.sqrt(var)
        e["z_corrected_area_ratio"] = math.exp(mean)
        e["z_corrected_area_ratio_interval_1se"] = [math.exp(mean - se), math.exp(mean + se)]


def independent_checks(results: list[dict], box, seed: int = 0) -> dict:
    """sbi's SBC checks and the tarp package's coverage on a study's stored draws.

    Ranks are counted as sbi's ``run_sbc`` counts them (draws below the truth, per
    parameter). TARP's reference points are drawn uniformly in the prior box (the
    package's ``"random"`` references in the unit box the draws are scaled to).
    """
    import torch
    from sbi.diagnostics import check_sbc, check_tarp
    from tarp import get_tarp_coverage

    n_draws = min(len(r["draws"]) for r in results)
    draws = np.stack([np.asarray(r["draws"][:n_draws], dtype=float) for r in results])
    truths = np.stack([np.asarray(r["truth"], dtype=float) for r in results])
    ranks = (draws < truths[:, None, :]).sum(1)
    low, high = np.asarray(box.low, float), np.asarray(box.high, float)
    torch.manual_seed(seed)
    sbc = check_sbc(torch.as_tensor(ranks, dtype=torch.float32),
                    torch.as_tensor(truths, dtype=torch.float32),
                    torch.as_tensor(draws[:, 0], dtype=torch.float32),
                    num_posterior_samples=n_draws)  # fmt: skip
    # sbi's C2ST of ranks is not 0.5 for uniform ranks (about 0.55-0.59 on 400 maps and
    # 0.68-0.69 on 1,000): the same check of exactly uniform ranks, as many, is its baseline
    null_ranks = torch.randint(0, n_draws + 1, ranks.shape,
                               generator=torch.Generator().manual_seed(seed))  # fmt: skip
    torch.manual_seed(seed)
    null = check_sbc(null_ranks.float(), torch.as_tensor(truths, dtype=torch.float32),
                     torch.as_tensor(draws[:, 0], dtype=torch.float32),
                     num_posterior_samples=n_draws)  # fmt: skip
    ecp, alpha = get_tarp_coverage(np.swapaxes((draws - low) / (high - low), 0, 1),
                                   (truths - low) / (high - low), references="random",
                                   seed=seed)  # fmt: skip
    atc, ks = check_tarp(torch.as_tensor(ecp), torch.as_tensor(alpha))
    return {
        "n_maps": len(results),
        "n_boxes": len(np.unique(np.round(truths, 9), axis=0)),
        "n_draws": n_draws,
        "sbc_ks_pvalue": dict(zip(PARAM_NAMES, sbc["ks_pvals"].tolist(), strict=True)),
        "sbc_c2st_ranks": dict(zip(PARAM_NAMES, sbc["c2st_ranks"].tolist(), strict=True)),
        "sbc_c2st_uniform_ranks": dict(zip(PARAM_NAMES, null["c2st_ranks"].tolist(), strict=True)),
        "tarp_max_deviation": float(np.max(np.abs(ecp - alpha))),
        "tarp_atc": float(atc),
        "tarp_ks_pvalue": float(ks),
    }


def z_by_quartile(results: list[dict]) -> dict:
    """Per parameter: the z-score mean (± s.e.) in each quartile of the posterior mean, from
    each map's draws (:func:`diffinfer.calibration.metrics.z_by_mean_quartile`)."""
    mean = np.stack([np.mean(np.asarray(r["draws"], float), 0) for r in results])
    sd = np.stack([np.std(np.asarray(r["draws"], float), 0) for r in results])
    truths = np.stack([np.asarray(r["truth"], float) for r in results])
    return z_by_mean_quartile(mean, sd, truths, PARAM_NAMES)


def one_per_box(results: list[dict]) -> list[dict]:
    """The first map (lowest index) of each box: maps of one box share their θ."""
    seen, kept = set(), []
    for r in sorted(results, key=lambda r: int(r["index"])):
        key = tuple(np.round(np.asarray(r["truth"], dtype=float), 9))
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


#: Study settings that may differ between pooled studies (the maps, not the posteriors).
POOLABLE = {"split", "n_maps", "analyses"}


def same_simulation(data: Path, other: Path, study: Path) -> object:
    """The seed of data set ``other``, after checking that it comes from the simulator and
    settings of ``data`` (their ``dataset.json``): test sets simulated apart, with other
    seeds, may be pooled. Refused, naming the difference, otherwise."""
    from diffinfer.io import same_json

    a = read_json(data / "dataset.json", what="data set description")
    b = read_json(other / "dataset.json", what="data set description")
    differ = [key for key in ("simulator", "field", "suite", "set", "config")
              if not same_json(a.get(key), b.get(key))]  # fmt: skip
    if differ:
        raise SystemExit(f"nbody_comparison: {other} holds other maps than {data} (of "
                         f"{study}'s study): {', '.join(differ)} differ; only maps of one "
                         "simulator and geometry can be pooled")  # fmt: skip
    return b.get("seed")


def pooled_results(studies: list[Path], box_once: bool) -> tuple[dict, dict[str, list[dict]]]:
    """The first study's description and the results of its analyses over all ``studies``
    (map indices of the k-th study offset by k × 10⁶ so they stay distinct), optionally one
    map per box. Studies whose posteriors were computed with other settings (model,
    likelihood, temperature, options, ...) are refused, naming the settings; studies of
    other data sets only where these were simulated with the same simulator and settings
    and another seed (:func:`same_simulation`)."""
    specs = [read_json(path / "study.json", what="study description") for path in studies]
    first = specs[0]
    poolable = set(POOLABLE)
    datas = list(dict.fromkeys(str(study.get("data")) for study in specs))
    if len(datas) > 1 and all(d != "None" for d in datas):
        study_of = {str(spec.get("data")): path for path, spec in zip(studies, specs, strict=True)}
        seeds = {d: same_simulation(Path(datas[0]), Path(d), study_of[d]) for d in datas}
        if len(set(map(str, seeds.values()))) < len(seeds):
            raise SystemExit(f"nbody_comparison: the data sets {', '.join(datas)} were "
                             f"simulated with the seeds {list(seeds.values())}: a repeated "
                             "seed repeats boxes, which pooling would count twice")  # fmt: skip
        poolable.add("data")
    pooled: dict[str, list[dict]] = {}
    for k, (path, study) in enumerate(zip(studies, specs, strict=True)):
        differ = sorted(key for key in set(first) | set(study)
                        if key not in poolable and first.get(key) != study.get(key))  # fmt: skip
        if differ:
            raise SystemExit(f"nbody_comparison: {path} differs from {studies[0]} in "
                             f"{', '.join(differ)}: only studies with the same settings "
                             "(other splits or numbers of maps) can be pooled")  # fmt: skip
        for a, res in study_results(path, study).items():
            if a not in first["analyses"]:
                continue
            if box_once:
                res = one_per_box(res)
            pooled.setdefault(a, []).extend({**r, "index": k * 10**6 + int(r["index"])}
                                            for r in res)  # fmt: skip
    return first, pooled


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("--pool", type=Path, action="append", default=[],
                   help="another study whose maps join these (repeatable)")  # fmt: skip
    p.add_argument("--one-per-box", action="store_true",
                   help="keep the first map of each box (maps of a box share their θ)")  # fmt: skip
    p.add_argument("--record", default=None, metavar="REFERENCE",
                   help="write the coverage of the study's NPE analysis into this reference's "
                        "card (a study of independent maps: one per box)")  # fmt: skip
    p.add_argument(
        "--name",
        default=None,
        help="write comparison-NAME.{json,md} (needed by --pool, --one-per-box)",
    )
    args = p.parse_args()
    if (args.pool or args.one_per_box) and not args.name:
        p.error("--pool and --one-per-box write a separate comparison: give it a --name")
    stem = f"comparison-{args.name}" if args.name else "comparison"
    coverage = {}
    if args.pool or args.one_per_box:
        study, results = pooled_results([args.study, *args.pool], args.one_per_box)
        metrics = {a: {"label": str(res[0]["label"]),
                       **analysis_metrics(res, study_box(study),
                                          seed=int(study.get("seed", 0)))}
                   for a, res in results.items()}  # fmt: skip
    else:
        report = read_json(args.study / "report.json", what="study report")
        study = report["study"]
        results = study_results(args.study, study)
        metrics = report["analyses"]
    box = study_box(study)
    for a, m in metrics.items():
        coverage[a] = {
            "label": m["label"],
            "n_maps": m["n_maps"],
            "hpd_in_band_99": m["hpd_coverage"]["inside_band_99"],
            "hpd_max_deviation": m["hpd_coverage"]["max_deviation"],
            "tarp_in_band_99": m["tarp"]["inside_band_99"],
            "tarp_max_deviation": m["tarp"].get("max_deviation"),
            "ranks_in_band_99": {k: v["inside_band"] for k, v in m["ranks"].items()},
            "z_mean": {k: [v["mean"], v["mean_se"]] for k, v in m["z_score"].items()},
            "z_std": {k: [v["std"], v["std_se"]] for k, v in m["z_score"].items()},
            "verdict": m["verdict"],
            "min_detectable_deviation": m.get("min_detectable_deviation"),
            "mean_std": m["mean_std"],
            "mean_seconds": m["mean_seconds"],
            "independent": independent_checks(results[a], box, seed=int(study.get("seed", 0))),
            "z_by_posterior_mean_quartile": z_by_quartile(results[a]),
        }
    gains = [information_gain(results, ref) for ref in REFERENCES if ref in results]
    for g in gains:
        z_corrected(g, coverage)
    out = {"study": str(args.study), "pooled": [str(s) for s in args.pool],
           "one_per_box": args.one_per_box, "coverage": coverage,
           "information_gain": gains}  # fmt: skip
    write_json_atomic(args.study / f"{stem}.json", out)
    if args.record:
        record(args.record, args.study, study, coverage, pooled=args.pool)
    text = table(out)
    write_text_atomic(args.study / f"{stem}.md", text)
    if gains and any(isinstance(e, dict) for e in gains[0].values()):
        area_figure(gains[0], args.study / "figures" / f"{stem}-area.png")
    print(text)


def record(reference: str, path: Path, study: dict, coverage: dict,
           pooled: list[Path] = ()) -> None:  # fmt: skip
    """Store the coverage of the study's NPE analysis (with the maps of the ``pooled``
    studies) in the reference's card."""
    from diffinfer.likelihoods.npe import LIKELIHOOD_SUMMARIES, NPEReference, record_coverage

    found = [a for a in coverage if a.startswith("npe")]
    if len(found) > 1:  # the study's analysis of that reference's summary
        summary = NPEReference.load(reference).summary
        found = [a for a in found if LIKELIHOOD_SUMMARIES[a] == summary]
    if len(found) != 1:
        raise SystemExit(f"nbody_comparison: --record needs a study of one NPE analysis of "
                         f"{reference}'s summary; {path} has {found or 'none'}")  # fmt: skip
    analysis = found[0]
    c = coverage[analysis]
    if c["independent"]["n_boxes"] < c["n_maps"]:
        raise SystemExit(f"nbody_comparison: {path} holds {c['n_maps']} maps of "
                         f"{c['independent']['n_boxes']} boxes; record a study of one map "
                         "per box")  # fmt: skip
    entry = {"study": str(path), "data": study.get("data"), "split": study.get("split"),
             "pooled": [str(p) for p in pooled], "analysis": analysis,
             **{k: v for k, v in c.items() if k != "label"}}  # fmt: skip
    print(f"recorded in {record_coverage(reference, entry)}")


def area_figure(gain: dict, path: Path) -> None:
    """Histogram, per analysis, of the per-map posterior area over the reference's."""
    from diffinfer.plots import pyplot, save_figure_atomic
    from diffinfer.styles import posterior_styles

    entries = {a: e for a, e in gain.items() if isinstance(e, dict)}
    styles = dict(zip(entries, posterior_styles(list(entries), list(entries)), strict=True))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ratios = {a: np.asarray(e["log_area_ratio_per_map"]) / math.log(10)
              for a, e in entries.items()}  # fmt: skip
    values = np.concatenate(list(ratios.values()))
    bins = np.linspace(min(values.min(), 0) - 0.05, max(values.max(), 0) + 0.05, 40)
    for a, v in ratios.items():
        mean = entries[a]["area_ratio_geometric_mean"]
        ax.hist(v, bins=bins, histtype="step", lw=1.5, color=styles[a].colour,
                label=f"{a} (geometric mean {mean:.3f})")  # fmt: skip
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set_xlabel(f"log$_{{10}}$ posterior area / area of {gain['reference']}'s")
    ax.set_ylabel(f"maps (of {gain['n_common_maps']})")
    ax.legend(fontsize=8)
    save_figure_atomic(fig, path, bbox_inches="tight")
    plt.close(fig)


def table(out: dict) -> str:
    lines = ["| analysis | maps | HPD in 99 % band (max dev.) | TARP in band | ranks in band "
             "(Ωm, σ8) | z mean Ωm / σ8 | z std Ωm / σ8 | verdict |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for a, c in out["coverage"].items():
        boxes = c["independent"]["n_boxes"]
        if boxes < c["n_maps"]:
            lines.insert(0, f"**{a}: {c['n_maps']} maps from {boxes} boxes**: maps of one box "
                         "are not independent, and the bands below assume they are; "
                         "`--one-per-box` keeps one map of each.\n")  # fmt: skip
        zm = " / ".join(f"{v[0]:+.2f}±{v[1]:.2f}" for v in c["z_mean"].values())
        zs = " / ".join(f"{v[0]:.2f}±{v[1]:.2f}" for v in c["z_std"].values())
        rk = ", ".join("yes" if v else "no" for v in c["ranks_in_band_99"].values())
        lines.append(f"| {a} | {c['n_maps']} | {'yes' if c['hpd_in_band_99'] else 'no'} "
                     f"({c['hpd_max_deviation']:.3f}) | {'yes' if c['tarp_in_band_99'] else 'no'}"
                     f" | {rk} | {zm} | {zs} | {c['verdict']} |")  # fmt: skip
    lines += ["", "The same draws checked with sbi (`check_sbc`: KS p-value of the ranks, C2ST "
              "of ranks against uniform; its baseline is the same check of exactly uniform "
              "ranks, as many, not 0.5) and the tarp package (TARP curve's maximum "
              "deviation; sbi's `check_tarp`: area to the curve, KS p-value):", "",
              "| analysis | SBC KS p Ωm / σ8 | SBC C2ST Ωm / σ8 (uniform ranks) | TARP max dev. "
              "| TARP ATC | TARP KS p |", "|---|---|---|---|---|---|"]  # fmt: skip
    for a, c in out["coverage"].items():
        i = c["independent"]
        ks = " / ".join(f"{v:.3f}" for v in i["sbc_ks_pvalue"].values())
        c2 = " / ".join(f"{v:.3f}" for v in i["sbc_c2st_ranks"].values())
        if "sbc_c2st_uniform_ranks" in i:
            c2 += " (" + " / ".join(f"{v:.3f}" for v in i["sbc_c2st_uniform_ranks"].values()) + ")"
        lines.append(f"| {a} | {ks} | {c2} | {i['tarp_max_deviation']:.3f} | "
                     f"{i['tarp_atc']:+.3f} | {i['tarp_ks_pvalue']:.3f} |")  # fmt: skip
    lines += ["", "Mean z-score (± s.e.) by quartile of the posterior mean (0 in every quartile "
              "if calibrated):", "", "| analysis | Ωm quartiles | σ8 quartiles |",
              "|---|---|---|"]  # fmt: skip
    for a, c in out["coverage"].items():
        q = c.get("z_by_posterior_mean_quartile")
        if q:
            cells = [", ".join(f"{e['z_mean']:+.2f}±{e['z_mean_se']:.2f}" for e in q[name])
                     for name in PARAM_NAMES]  # fmt: skip
            lines.append(f"| {a} | {cells[0]} | {cells[1]} |")
    for g in out["information_gain"]:
        lines += ["", f"Posterior area det(Σ)^½ relative to {g['reference']}'s on the "
                  f"{g['n_common_maps']} maps every analysis finished (geometric mean, ±1 "
                  "s.e.):", "", "| analysis | area ratio | median | tighter on | σ(Ωm) ratio | "
                  "σ(σ8) ratio |", "|---|---|---|---|---|---|"]  # fmt: skip
        for a, e in g.items():
            if not isinstance(e, dict):
                continue
            lo, hi = e["area_ratio_interval_1se"]
            sr = [f"{v['geometric_mean']:.3f}" for v in e["std_ratio"].values()]
            lines.append(f"| {a} | {e['area_ratio_geometric_mean']:.3f} ({lo:.3f}–{hi:.3f}) | "
                         f"{e['area_ratio_median']:.3f} | {100 * e['fraction_tighter']:.0f} % | "
                         f"{sr[0]} | {sr[1]} |")  # fmt: skip
        corrected = [(a, e) for a, e in g.items()
                     if isinstance(e, dict) and "z_corrected_area_ratio" in e]  # fmt: skip
        if corrected:
            lines += ["", "After each side's z-spread correction (every width times its z-score "
                      "spread): " + "; ".join(
                          f"{a} {e['z_corrected_area_ratio']:.3f} "
                          f"({e['z_corrected_area_ratio_interval_1se'][0]:.3f}–"
                          f"{e['z_corrected_area_ratio_interval_1se'][1]:.3f})"
                          for a, e in corrected) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
