"""Noise robustness: posteriors of maps with added Gaussian pixel noise (docs/calibration.md).

For each noise level (standard deviation in the model space of the transform, where a
map's pixels have unit variance), a coverage study of ``--n-maps`` test maps with the noise
added and modelled by every likelihood: the diffusion likelihood (the map is the diffusion
state at the timestep whose noise matches), the exact noisy likelihood, and the power
spectrum fitted to equally noisy simulations. Reports the bias (mean of posterior mean -
truth, in units of the posterior std) and the mean posterior width per parameter.

    python calibration/noise_study.py [--model oracle] [--n-maps 20]
    python calibration/noise_study.py --model lognormal64 --data data/lognormal64 \
        --out calibration/noise-lognormal64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diffinfer.calibration.config import StudyConfig
from diffinfer.calibration.metrics import z_score_summary, z_scores
from diffinfer.calibration.results import load_results
from diffinfer.calibration.study import run_study
from diffinfer.io import write_json_atomic
from diffinfer.parameters import PARAM_LABELS, PARAM_NAMES
from diffinfer.plots import pyplot, save_figure_atomic
from diffinfer.styles import analysis_style

LEVELS = (0.0, 0.1, 0.3, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="oracle")
    parser.add_argument("--data", default=None, help="held-out maps (default: simulate)")
    parser.add_argument("--n-maps", type=int, default=20)
    parser.add_argument("--n-timesteps", type=int, default=64, help="0: every term")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="calibration/noise")
    args = parser.parse_args()
    out = Path(args.out)
    table = {}
    for level in LEVELS:
        options = {"n_timesteps": args.n_timesteps or None, "precision": "bf16"}
        cfg = StudyConfig(model=args.model, data=args.data, likelihood="vlb",
                          n_maps=args.n_maps, n_draws=500, noise_sigma=level,
                          temperature=1.0, options=options)  # fmt: skip
        run_study(cfg, out / f"sigma{level:g}", workers=args.workers, progress=False)
        for analysis in cfg.analyses:
            res = load_results(out / f"sigma{level:g}", analysis)
            truth = np.stack([r["truth"] for r in res])
            mean = np.stack([r["mean"] for r in res])
            std = np.stack([np.sqrt(np.diag(r["cov"])) for r in res])
            z = z_score_summary(z_scores(mean, std, truth))
            table.setdefault(analysis, {})[f"{level:g}"] = {
                "n_maps": len(res),
                "bias_z": {n: zj["mean"] for n, zj in zip(PARAM_NAMES, z, strict=True)},
                "bias_z_se": {n: zj["mean_se"] for n, zj in zip(PARAM_NAMES, z, strict=True)},
                "z_std": {n: zj["std"] for n, zj in zip(PARAM_NAMES, z, strict=True)},
                "width": dict(zip(PARAM_NAMES, std.mean(0).tolist(), strict=True)),
            }
    write_json_atomic(out / "noise_report.json", table)
    print("| analysis | noise | maps | bias Omega_m [sigma] | bias sigma_8 [sigma] | "
          "z std Omega_m | z std sigma_8 | width Omega_m | width sigma_8 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for analysis, rows in table.items():
        for level, r in rows.items():
            b, se, zs, w = r["bias_z"], r["bias_z_se"], r["z_std"], r["width"]
            print(f"| {analysis} | {level} | {r['n_maps']} | "
                  f"{b['Omega_m']:+.2f} ± {se['Omega_m']:.2f} | "
                  f"{b['sigma_8']:+.2f} ± {se['sigma_8']:.2f} | {zs['Omega_m']:.2f} | "
                  f"{zs['sigma_8']:.2f} | {w['Omega_m']:.4f} | {w['sigma_8']:.4f} |")  # fmt: skip
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    levels = [float(x) for x in next(iter(table.values()))]
    for analysis, rows in table.items():
        for j, name in enumerate(PARAM_NAMES):
            b = [rows[f"{lv:g}"]["bias_z"][name] for lv in levels]
            se = [rows[f"{lv:g}"]["bias_z_se"][name] for lv in levels]
            w = [rows[f"{lv:g}"]["width"][name] for lv in levels]
            style = analysis_style(analysis)
            axes[0, j].errorbar(levels, b, se, marker=style.marker, capsize=3, label=analysis,
                                **style.line_kwargs())  # fmt: skip
            axes[1, j].plot(levels, w, marker=style.marker, label=analysis,
                            **style.line_kwargs())  # fmt: skip
            axes[0, j].set(title=f"${PARAM_LABELS[j]}$", ylabel="bias [posterior std]")
            axes[1, j].set(xlabel="pixel noise (model space)", ylabel="posterior std")
    for ax in axes.ravel():
        ax.set_xscale("symlog", linthresh=0.1)
        ax.legend(fontsize=7)
    axes[0, 0].axhline(0, color="k", lw=0.6)
    axes[0, 1].axhline(0, color="k", lw=0.6)
    fig.tight_layout()
    save_figure_atomic(fig, out / "noise.png")
    print(f"wrote {out / 'noise_report.json'} and {out / 'noise.png'}")


if __name__ == "__main__":
    main()
