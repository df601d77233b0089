"""The N-body diffusion model as an emulator, against fresh N-body simulations (docs/nbody.md).

At each tested cosmology: ``--maps`` emulated maps (the model's default sampler) against
the maps of ``ceil(maps / 15)`` fresh N-body boxes (15 maps each, seeds apart from the data
set's), on three statistics, each with its standard error. The emulated maps are
independent; the 15 maps of a box are not (slabs of one volume), so the simulated side's
standard errors come from the scatter of the box means:

- the power spectrum of delta = rho / mean - 1: the ratio of the mean spectra per k bin;
- the one-point PDF of ln rho: mean, standard deviation and skewness of the pixels;
- peak counts: local maxima (8 neighbours, periodic) of the map smoothed by a Gaussian of
  ``--smooth`` pixels, counted per map in bins of peak height nu = delta_s / sigma_s
  (the map's own smoothed-field standard deviation): a non-Gaussian statistic that the
  power spectrum does not fix.

A reduced chi^2 over the bins of each statistic compares emulated with simulated means
given both sets' scatter (1 is agreement within the noise of these sample sizes).

``--corners`` adds the two other near-corners of the prior, (0.15, 0.65) and (0.45, 0.95),
so that the centre and four corners are tested, and checks the targets of a model that
follows theta (``targets`` in the JSON; :func:`emulator_targets`): P(k) within 3 % for
k <= 0.6 h/Mpc and 5 % to k = 1.2 at every cosmology, the mean of ln rho within 2 s.e., and
the response of P(k) to each parameter, the finite difference of ln P(k) along each edge of
the four corners (k <= 1.2), within 10 % of the simulations'.

    python scripts/nbody_emulator_validation.py --model runs/nbody64/model --maps 256 --card

``--card`` records the headline (χ² per statistic and cosmology) in ``metrics.emulator`` of
the model's card (atomically; the weights are untouched).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from diffinfer.diffusion import load_model
from diffinfer.fields.stats import power_spectrum
from diffinfer.io import read_json, write_json_atomic, write_text_atomic
from diffinfer.simulators.nbody import NBodyConfig, NBodySimulator
from diffinfer.store import read_card, resolve_model_dir, update_card

ROOT = Path(__file__).resolve().parents[1]
COSMOLOGIES = [(0.3, 0.8), (0.15, 0.95), (0.45, 0.65)]
CORNERS = [(0.15, 0.65), (0.45, 0.95)]
"""With ``--corners``: the other two near-corners, so that all four are tested."""
POWER_TOLERANCE = ((0.6, 0.03), (1.2, 0.05))
"""P(k) targets: |emulated / simulated - 1| at most 3 % for k <= 0.6 h/Mpc, 5 % to 1.2."""
RESPONSE_TOLERANCE = 0.10
"""The response of ln P(k) to each parameter within 10 % of the simulations' (k <= 1.2)."""
MEAN_SE_TOLERANCE = 2.0
"""The mean of ln rho within this many standard errors of the simulations'."""
NU_EDGES = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.5, 7.0])


def peak_counts(maps: np.ndarray, smooth: float) -> np.ndarray:
    """Peaks per map in the bins of :data:`NU_EDGES`, shape (M, n_bins)."""
    out = []
    for m in maps:
        d = ndimage.gaussian_filter(m / m.mean() - 1.0, smooth, mode="wrap")
        nu = d / d.std()
        is_peak = nu == ndimage.maximum_filter(nu, size=3, mode="wrap")
        out.append(np.histogram(nu[is_peak], bins=NU_EDGES)[0])
    return np.array(out, dtype=np.float64)


def moments(maps: np.ndarray) -> np.ndarray:
    """Per map: mean, std and skewness of ln rho, shape (M, 3)."""
    x = np.log(maps.reshape(len(maps), -1))
    d = x - x.mean(1, keepdims=True)
    return np.stack([x.mean(1), x.std(1), (d**3).mean(1) / (d**2).mean(1) ** 1.5], axis=1)


def mean_se(x: np.ndarray, per_box: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Column means of x (M, c) and their standard errors.

    Rows come in consecutive groups of ``per_box`` correlated rows (the maps of one box);
    the error is the scatter of the group means over the square root of their number.
    """
    groups = x.reshape(len(x) // per_box, per_box, -1).mean(1)
    return x.mean(0), groups.std(0, ddof=1) / np.sqrt(len(groups))


def chi2(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean over columns of (mean_a - mean_b)^2 / (se_a^2 + se_b^2), from :func:`mean_se`."""
    var = a[1] ** 2 + b[1] ** 2
    ok = var > 0
    return float(np.mean((a[0] - b[0])[ok] ** 2 / var[ok]))


def ratio_with_error(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """mean_a / mean_b per column and its standard error (first order), from :func:`mean_se`."""
    r = a[0] / b[0]
    return r, np.abs(r) * np.sqrt((a[1] / a[0]) ** 2 + (b[1] / b[0]) ** 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/nbody64/model")
    p.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data/nbody64",
        help="the model's data set (its dataset.json gives the simulator settings)",
    )
    p.add_argument("--maps", type=int, default=256, help="maps per cosmology (default 256)")
    p.add_argument("--smooth", type=float, default=1.0, help="peak smoothing, pixels")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--json", type=Path, default=ROOT / "docs/results/nbody_emulator.json")
    p.add_argument("--corners", action="store_true",
                   help="test all four near-corners; check the targets")  # fmt: skip
    p.add_argument("--table", action="store_true", help="print the table of --json only")
    p.add_argument(
        "--card",
        action="store_true",
        help="record the headline in the model card's metrics.emulator",
    )
    args = p.parse_args()
    if args.table:
        report = read_json(args.json)
        if args.corners:
            report["targets"] = emulator_targets(report)
            write_json_atomic(args.json, report)
            write_text_atomic(args.json.with_suffix(".md"), table(report))
        print(table(report))
        return
    model = load_model(args.model)
    cfg = NBodyConfig.from_dict(read_json(args.data / "dataset.json")["config"])
    sim = NBodySimulator(cfg)
    box = cfg.box_size
    if (model.field.n_pix, model.field.box_size) != (cfg.n_pix, cfg.box_size):
        raise SystemExit(
            f"the model's maps ({model.field.n_pix}^2 pixels, "
            f"{model.field.box_size} Mpc/h) are not those of {args.data} "
            f"({cfg.n_pix}^2, {cfg.box_size} Mpc/h): give the model's data set"
        )
    report = {"model": args.model, "maps": args.maps, "smooth_pixels": args.smooth,
              "nu_edges": NU_EDGES.tolist(), "cosmologies": []}  # fmt: skip
    if args.json.is_file():
        old = read_json(args.json)
        if old.get("model") == args.model and old.get("maps") == args.maps:
            report = old
    done = {tuple(c["theta"]) for c in report["cosmologies"]}
    n_boxes = math.ceil(args.maps / cfg.maps_per_box)
    for theta in COSMOLOGIES + (CORNERS if args.corners else []):
        if tuple(theta) in done:
            continue
        t0 = time.perf_counter()
        sims = sim.simulate(np.repeat([theta], n_boxes, axis=0), seed=90_000)
        sims = sims.reshape(-1, cfg.n_pix, cfg.n_pix).astype(np.float64)  # box-major
        per_box = cfg.maps_per_box
        t1 = time.perf_counter()
        emu = model.sample(theta, args.maps, seed=1, precision=args.precision)
        emu = np.asarray(emu, dtype=np.float64).reshape(-1, cfg.n_pix, cfg.n_pix)
        t2 = time.perf_counter()
        ps_e = power_spectrum(emu / emu.mean((1, 2), keepdims=True) - 1, box)
        ps_s = power_spectrum(sims / sims.mean((1, 2), keepdims=True) - 1, box)
        pw_e, pw_s = mean_se(ps_e.power), mean_se(ps_s.power, per_box)
        r, se = ratio_with_error(pw_e, pw_s)
        mo_e, mo_s = mean_se(moments(emu)), mean_se(moments(sims), per_box)
        pk_e = mean_se(peak_counts(emu, args.smooth))
        pk_s = mean_se(peak_counts(sims, args.smooth), per_box)
        pr, pse = ratio_with_error(pk_e, pk_s)
        report["cosmologies"].append({
            "theta": list(theta),
            "k": ps_s.k.tolist(),
            "power_ratio": r.tolist(),
            "power_ratio_se": se.tolist(),
            "power_emulated": pw_e[0].tolist(),
            "power_emulated_se": pw_e[1].tolist(),
            "power_simulated": pw_s[0].tolist(),
            "power_simulated_se": pw_s[1].tolist(),
            "power_chi2": chi2(pw_e, pw_s),
            "lnrho_moments_emulated": mo_e[0].tolist(),
            "lnrho_moments_simulated": mo_s[0].tolist(),
            "lnrho_moments_se": np.hypot(mo_e[1], mo_s[1]).tolist(),
            "moments_chi2": chi2(mo_e, mo_s),
            "peaks_emulated": pk_e[0].tolist(),
            "peaks_simulated": pk_s[0].tolist(),
            "peak_ratio": pr.tolist(),
            "peak_ratio_se": pse.tolist(),
            "peaks_chi2": chi2(pk_e, pk_s),
            "n_emulated": len(emu),
            "n_simulated": len(sims),
            "n_boxes": len(sims) // per_box,
            "seconds_simulate": round(t1 - t0, 1),
            "seconds_emulate": round(t2 - t1, 1),
        })  # fmt: skip
        write_json_atomic(args.json, report)
        print(f"{theta}: done ({t1 - t0:.0f} s simulating, {t2 - t1:.0f} s emulating)")
    if args.corners:
        report["targets"] = emulator_targets(report)
        write_json_atomic(args.json, report)
    write_text_atomic(args.json.with_suffix(".md"), table(report))
    print(table(report))
    if args.card:
        model_dir = resolve_model_dir(args.model)
        metrics = dict(read_card(model_dir).get("metrics") or {})
        metrics["emulator"] = headline(report)
        print(f"recorded in {update_card(model_dir, {'metrics': metrics})}")


def _log_power(c: dict, side: str) -> tuple[np.ndarray, np.ndarray]:
    """ln of a cosmology's mean P(k), emulated or simulated, and its standard error."""
    p, se = np.array(c[f"power_{side}"]), np.array(c[f"power_{side}_se"])
    return np.log(p), se / p


def _status(dev: float, se: float, tol: float) -> str:
    """``met`` where a deviation is within ``tol`` by 2 s.e., ``not met`` where it exceeds
    it by 2 s.e., else ``unresolved`` (the sample cannot tell)."""
    if dev + 2 * se <= tol:
        return "met"
    return "not met" if dev - 2 * se > tol else "unresolved"


def emulator_targets(report: dict) -> dict:
    """The checks of a model that follows theta, on a report with the centre and four
    corners: P(k) ratios, the mean of ln rho, and the response of ln P(k) to each
    parameter along the corners' edges (emulated over simulated finite differences, with
    first-order errors), for k <= 1.2 h/Mpc. The P(k) ratio and the response are averaged
    over their k bins (inverse-variance weights, bins taken as independent): a single bin's
    error (about 4 % from 18 simulated boxes) cannot resolve 3 %; each is ``met``, ``not
    met`` or ``unresolved`` (:func:`_status`)."""
    by = {tuple(c["theta"]): c for c in report["cosmologies"]}
    corners = [(0.15, 0.65), (0.15, 0.95), (0.45, 0.65), (0.45, 0.95)]
    missing = [t for t in [(0.3, 0.8), *corners] if t not in by]
    if missing or any("power_simulated" not in c for c in by.values()):
        raise SystemExit(f"the targets need the centre and four corners with their mean "
                         f"spectra (rerun with --corners; missing {missing})")  # fmt: skip
    k = np.array(report["cosmologies"][0]["k"])
    out: dict = {"cosmologies": [], "responses": []}
    for theta, c in by.items():
        r, r_se = np.array(c["power_ratio"]), np.array(c["power_ratio_se"])
        bands, low = {}, 0.0
        for kmax, tol in POWER_TOLERANCE:
            sel = (k > low) & (k <= kmax)
            w = 1 / r_se[sel] ** 2
            mean, se = float(np.sum(w * r[sel]) / np.sum(w)), float(1 / np.sqrt(np.sum(w)))
            bands[f"{low}<k<={kmax}"] = {"ratio_mean": mean, "ratio_mean_se": se,
                                         "max_abs_dev": float(np.max(np.abs(r[sel] - 1))),
                                         "status": _status(abs(mean - 1), se, tol)}  # fmt: skip
            low = kmax
        d = c["lnrho_moments_emulated"][0] - c["lnrho_moments_simulated"][0]
        n_se = abs(d) / c["lnrho_moments_se"][0]
        out["cosmologies"].append({"theta": list(theta), "power": bands,
                                   "power_ok": all(b["status"] == "met" for b in bands.values()),
                                   "lnrho_mean_n_se": n_se,
                                   "lnrho_mean_ok": n_se <= MEAN_SE_TOLERANCE})  # fmt: skip
    use = k <= POWER_TOLERANCE[-1][0]
    edges = [
        ("Omega_m", (0.15, 0.65), (0.45, 0.65)),
        ("Omega_m", (0.15, 0.95), (0.45, 0.95)),
        ("sigma_8", (0.15, 0.65), (0.15, 0.95)),
        ("sigma_8", (0.45, 0.65), (0.45, 0.95)),
    ]
    for param, lo, hi in edges:
        (e_lo, es_lo), (e_hi, es_hi) = (
            _log_power(by[lo], "emulated"),
            _log_power(by[hi], "emulated"),
        )
        (s_lo, ss_lo), (s_hi, ss_hi) = (_log_power(by[lo], "simulated"),
                                        _log_power(by[hi], "simulated"))  # fmt: skip
        de, ds = e_hi - e_lo, s_hi - s_lo
        ratio = de / ds
        se = np.abs(ratio) * np.sqrt((es_lo**2 + es_hi**2) / de**2
                                     + (ss_lo**2 + ss_hi**2) / ds**2)  # fmt: skip
        # the k-averaged ratio, weighting each bin by its inverse variance
        w = 1 / se[use] ** 2
        mean = float(np.sum(w * ratio[use]) / np.sum(w))
        mean_se = float(1 / np.sqrt(np.sum(w)))
        out["responses"].append({"parameter": param, "from": list(lo), "to": list(hi),
                                 "ratio": ratio[use].tolist(), "ratio_se": se[use].tolist(),
                                 "k": k[use].tolist(), "ratio_mean": mean,
                                 "ratio_mean_se": mean_se,
                                 "status": _status(abs(mean - 1), mean_se,
                                                   RESPONSE_TOLERANCE)})  # fmt: skip
    out["all_ok"] = all(c["power_ok"] and c["lnrho_mean_ok"] for c in out["cosmologies"]) and (
        all(r["status"] == "met" for r in out["responses"])
    )
    return out


def headline(report: dict) -> dict:
    """The card's summary of a validation report: χ² per statistic and cosmology."""
    return {
        "source": "scripts/nbody_emulator_validation.py",
        "maps_per_cosmology": report["maps"],
        "cosmologies": [
            {"theta": c["theta"], "n_simulated": c["n_simulated"], "n_boxes": c["n_boxes"],
             "power_chi2": c["power_chi2"], "moments_chi2": c["moments_chi2"],
             "peaks_chi2": c["peaks_chi2"],
             "power_ratio_max_abs_dev": float(np.max(np.abs(np.array(c["power_ratio"]) - 1)))}
            for c in report["cosmologies"]
        ],
    }  # fmt: skip


def table(report: dict) -> str:
    lines = [f"Model {report['model']}: {report['maps']} emulated maps per cosmology against "
             "fresh N-body maps (ratios emulated / simulated ± 1 s.e.; χ² per bin, 1 = "
             "agreement within the noise).", "",
             "| θ | P(k) ratio, k = 0.1 / 0.3 / 0.6 / 1.2 | χ² P(k) | ln ρ mean / std / skew "
             "(emulated − simulated) | χ² | peaks ν = 0–1 / 1–2 / 2–3 / 3–4.5 / > 4.5 | χ² |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in report["cosmologies"]:
        k = np.array(c["k"])
        r, se = np.array(c["power_ratio"]), np.array(c["power_ratio_se"])
        picks = [int(np.argmin(abs(k - x))) for x in (0.1, 0.3, 0.6, 1.2)]
        pk = " / ".join(f"{r[i]:.3f}±{se[i]:.3f}" for i in picks)
        d = np.array(c["lnrho_moments_emulated"]) - np.array(c["lnrho_moments_simulated"])
        dse = np.array(c["lnrho_moments_se"])
        mo = " / ".join(f"{d[i]:+.3f}±{dse[i]:.3f}" for i in range(3))
        pr, pse = np.array(c["peak_ratio"]), np.array(c["peak_ratio_se"])
        peaks = " / ".join(f"{pr[i]:.2f}±{pse[i]:.2f}" for i in range(1, len(pr)))
        theta = f"({c['theta'][0]}, {c['theta'][1]})"
        lines.append(f"| {theta} | {pk} | {c['power_chi2']:.2f} | {mo} | "
                     f"{c['moments_chi2']:.2f} | {peaks} | {c['peaks_chi2']:.2f} |")  # fmt: skip
    if "targets" in report:
        lines += ["", targets_table(report["targets"])]
    return "\n".join(lines) + "\n"


def targets_table(t: dict) -> str:
    """The targets of :func:`emulator_targets` as markdown."""
    ok = {True: "yes", False: "**no**"}
    lines = ["| θ | P(k) ratio, 0 < k ≤ 0.6 (target 3 %) | 0.6 < k ≤ 1.2 (5 %) | "
             "ln ρ mean off by (s.e.; target 2) | met |", "|---|---|---|---|---|"]  # fmt: skip
    for c in t["cosmologies"]:
        cells = [f"{b['ratio_mean']:.3f} ± {b['ratio_mean_se']:.3f}: {b['status']}"
                 for b in c["power"].values()]  # fmt: skip
        lines.append(f"| ({c['theta'][0]}, {c['theta'][1]}) | {cells[0]} | {cells[1]} | "
                     f"{c['lnrho_mean_n_se']:.1f} | {ok[c['lnrho_mean_ok']]} |")  # fmt: skip
    lines += ["", "| response of ln P(k) to | along | emulated / simulated, k ≤ 1.2 "
              "(inverse-variance mean) | within 10 % |", "|---|---|---|---|"]  # fmt: skip
    for r in t["responses"]:
        lines.append(
            f"| {r['parameter']} | {tuple(r['from'])} → {tuple(r['to'])} | "
            f"{r['ratio_mean']:.3f} ± {r['ratio_mean_se']:.3f} | {r['status']} |"
        )
    lines.append(f"\nAll targets met: {ok[t['all_ok']]}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
