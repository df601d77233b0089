"""Emulator validation of a trained model on held-out cosmologies (docs/results.md).

For each of ``--n-cosmologies`` test-split cosmologies of the model's data set, emulate as
many maps as the data set holds for that cosmology (DDPM with every step, and DDIM with 50)
and compare with the held-out simulations:

- power spectrum of delta = rho - 1: mean |P_em / P_sim - 1| over k bins, and the z-score
  per bin;
- reduced chi^2 of the mean spectra, (P_em - P_sim)^2 / (s_em^2 / n_em + s_sim^2 / n_sim)
  averaged over bins, against the same statistic between the held-out simulations and fresh
  simulator maps (the simulations' own scatter; the paper reports 1.30 vs 1.27);
- one-point PDF of ln rho: mean, std and skewness, emulated vs simulated;
- the response of the spectrum to Omega_m and sigma_8 (finite differences across the test
  cosmologies' range) emulated vs simulated (``--response``).

The exact (oracle) denoiser goes through the same samplers, which separates sampler error
from network error.

    python scripts/emulator_validation.py --model lognormal64 --data data/lognormal64 \
        --out docs/figures
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import stats

from diffinfer.data.camels import CamelsMaps
from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.io import write_json_atomic
from diffinfer.plots import log_axis_ticks, pyplot, spectra
from diffinfer.simulators import LognormalSimulator
from diffinfer.styles import STYLES


def reduced_chi2(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over bins of (mean_a - mean_b)^2 / (var_a / n_a + var_b / n_b)."""
    num = (a.mean(0) - b.mean(0)) ** 2
    den = a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b)
    return float(np.mean(num / den))


def pdf_moments(density: np.ndarray) -> list[float]:
    v = np.log(density).ravel()
    return [float(v.mean()), float(v.std()), float(stats.skew(v))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--data", default="data/lognormal64")
    parser.add_argument("--n-cosmologies", type=int, default=10)
    parser.add_argument("--ddpm-steps", type=int, default=None, help="default: every step")
    parser.add_argument("--ddpm-cosmologies", type=int, default=2,
                        help="run DDPM (slow on a CPU) on this many cosmologies")  # fmt: skip
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("--json", default="docs/results/emulator_validation.json")
    args = parser.parse_args()

    model = load_model(args.model)
    oracle = DiffusionModel.oracle(LognormalSimulator(model.field, model.transform),
                                   model.schedule)  # fmt: skip
    d = model.card["training"]["config"]["data"]
    data = CamelsMaps.open(args.data, suite=d["suite"], set_name=d["set"])
    cosmo = data.split_cosmologies("test", tuple(d["fractions"]), seed=int(d["split_seed"]))
    # evenly spread over the test cosmologies, ordered by sigma_8 for the figure
    pick = cosmo[np.linspace(0, len(cosmo) - 1, args.n_cosmologies).round().astype(int)]
    pick = pick[np.argsort(data.params[pick, 1])]
    per = data.maps_per_cosmology
    sim = LognormalSimulator(model.field, model.transform)
    box = model.field.box_size
    samplers = [("ddpm", args.ddpm_steps or model.schedule.n_steps), ("ddim", args.ddim_steps)]
    rows: dict[str, list] = {}
    curves: dict[str, list] = {}
    k = None
    t0 = time.perf_counter()
    for c_idx, c in enumerate(pick):
        maps, theta = data.load(np.arange(c * per, (c + 1) * per), n_pix=model.field.n_pix)
        theta = theta[0]
        k, p_sim = spectra(maps, box)
        fresh = sim.simulate(theta, per, seed=12345, row_offset=int(c))
        _, p_fresh = spectra(fresh, box)
        entry = {"theta": theta.tolist(), "chi2_simulations": reduced_chi2(p_fresh, p_sim),
                 "pdf_sim": pdf_moments(maps)}  # fmt: skip
        rows.setdefault("simulations", []).append(entry)
        curves.setdefault("sim", []).append(p_sim.mean(0))
        for which, m in (("network", model), ("oracle", oracle)):
            for sampler, steps in samplers:
                if sampler == "ddpm" and c_idx % max(1, len(pick) // args.ddpm_cosmologies):
                    continue
                precision = args.precision if which == "network" else "fp32"
                em = m.sample(theta, per, steps=steps, sampler=sampler, seed=1000 + int(c),
                              precision=precision)  # fmt: skip
                _, p_em = spectra(em, box)
                ratio = p_em.mean(0) / p_sim.mean(0) - 1
                se = np.sqrt(p_em.var(0, ddof=1) / per + p_sim.var(0, ddof=1) / per)
                z = (p_em.mean(0) - p_sim.mean(0)) / se
                key = f"{which} {sampler.upper()}-{steps}"
                rows.setdefault(key, []).append({
                    "theta": theta.tolist(), "mean_abs_ratio": float(np.mean(np.abs(ratio))),
                    "mean_ratio": float(np.mean(ratio)), "mean_z": float(np.mean(z)),
                    "chi2": reduced_chi2(p_em, p_sim), "pdf": pdf_moments(em),
                    "pdf_sim": entry["pdf_sim"], "cosmology": c_idx,
                })  # fmt: skip
                curves.setdefault(key, []).append((c_idx, p_em.mean(0)))
        print(f"cosmology {c_idx + 1}/{len(pick)} {theta.round(3)} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip

    summary = {}
    for key, rs in rows.items():
        if key == "simulations":
            summary[key] = {"chi2": float(np.mean([r["chi2_simulations"] for r in rs]))}
            continue
        summary[key] = {
            "mean_abs_ratio": float(np.mean([r["mean_abs_ratio"] for r in rs])),
            "mean_ratio": float(np.mean([r["mean_ratio"] for r in rs])),
            "mean_z": float(np.mean([r["mean_z"] for r in rs])),
            "chi2": float(np.mean([r["chi2"] for r in rs])),
            "pdf_std_ratio": float(np.mean([r["pdf"][1] / r["pdf_sim"][1] for r in rs])),
            "pdf_skew_diff": float(np.mean([r["pdf"][2] - r["pdf_sim"][2] for r in rs])),
            "n_cosmologies": len(rs),
        }
    print("| emulator | cosmologies | mean abs(P_em/P_sim - 1) | mean (P_em/P_sim - 1) | mean z "
          "| reduced chi2 | ln rho std ratio | ln rho skew diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for key, s in summary.items():
        if key == "simulations":
            continue
        print(f"| {key} | {s['n_cosmologies']} | {s['mean_abs_ratio']:.4f} | "
              f"{s['mean_ratio']:+.4f} | "
              f"{s['mean_z']:+.2f} | {s['chi2']:.2f} | {s['pdf_std_ratio']:.4f} | "
              f"{s['pdf_skew_diff']:+.4f} |")  # fmt: skip
    print(f"| simulations vs fresh simulations | {len(pick)} | | | | "
          f"{summary['simulations']['chi2']:.2f} | | |")  # fmt: skip

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"summary": summary, "per_cosmology": rows, "k": k.tolist()})

    # figure: spectra and ratios for every cosmology; the response to sigma_8 is visible
    # as the vertical ordering
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("viridis")
    simulated, emulated = STYLES["simulated"], STYLES["emulated"]
    ddim_key = f"network DDIM-{args.ddim_steps}"
    for i in range(len(pick)):
        col = cmap(i / max(1, len(pick) - 1))
        th = rows["simulations"][i]["theta"]
        axes[0].loglog(k, curves["sim"][i], color=col, ls=simulated.ls, lw=1,
                       label=rf"$\Omega_m$={th[0]:.2f}, $\sigma_8$={th[1]:.2f}")  # fmt: skip
    for i, p in curves.get(ddim_key, []):
        axes[0].loglog(k, p, color=cmap(i / max(1, len(pick) - 1)), ls=emulated.ls, lw=1)
    # ratio averaged over the cosmologies, with its standard error: the network's emulator in
    # the "emulated" colour, the oracle (the exact denoiser) in the "exact" one; DDPM solid,
    # DDIM dashed
    network, oracle_colour = emulated.colour, STYLES["exact"].colour
    for key, style in ((f"network DDPM-{samplers[0][1]}", (network, "-")),
                       (f"oracle DDPM-{samplers[0][1]}", (oracle_colour, "-")),
                       (ddim_key, (network, "--")),
                       (f"oracle DDIM-{args.ddim_steps}", (oracle_colour, "--"))):  # fmt: skip
        if key not in curves:
            continue
        r = np.stack([p / curves["sim"][i] - 1 for i, p in curves[key]])
        m = r.mean(0)
        se = r.std(0, ddof=1) / np.sqrt(len(r)) if len(r) > 1 else np.zeros_like(m)
        axes[1].semilogx(k, m, color=style[0], ls=style[1], lw=1.4,
                         label=f"{key} ({len(r)} cosmologies)")  # fmt: skip
        if key.startswith("network"):
            axes[1].fill_between(k, m - se, m + se, color=style[0], alpha=0.2, lw=0)
    axes[0].set(xlabel="k [h/Mpc]", ylabel="P(k) [(Mpc/h)^2]",
                title=f"held-out simulations (solid), network DDIM-{args.ddim_steps} "
                      "(dashed)")  # fmt: skip
    axes[0].legend(fontsize=6)
    axes[1].axhline(0, color="k", lw=0.6)
    axes[1].axhspan(-0.05, 0.05, color="0.9", zorder=0, label="±5 %")
    axes[1].set(xlabel="k [h/Mpc]", ylabel="mean of P_em / P_sim - 1",
                title="mean over cosmologies: network (±1 s.e.), oracle")  # fmt: skip
    axes[1].legend(fontsize=7)
    for ax in axes:
        log_axis_ticks(ax.xaxis)
    fig.tight_layout()
    fig_path = Path(args.out) / "emulator_validation.png"
    fig.savefig(fig_path, dpi=110)
    print(f"wrote {out} and {fig_path}")


if __name__ == "__main__":
    main()
