"""The diffusion posterior of the shipped N-body example maps for a ladder of scale cuts
t_min, against the power-spectrum likelihood (docs/likelihood.md, "Scale cuts").

    .venv/bin/python scripts/scale_cut_examples.py --t-min 1,3,10,30,100 \
        --out docs/data/scale_cut_examples.json
    .venv/bin/python scripts/scale_cut_examples.py --table --out docs/data/scale_cut_examples.json

Each map of examples/nbody64 gets ``di.posterior(rho, model="nbody64", t_min=t,
temperature=1)`` for every t of the ladder (the default call otherwise: seed 0, the Monte
Carlo error control at its default tolerance; temperature 1 for every cut, because the
card's temperature was fitted for the whole bound only) and the Gaussian power-spectrum
posterior (``likelihood="power"``, ``spectrum="models/nbody64-power.npz"``). Per (map,
t_min): posterior mean, covariance, area (sqrt det of the covariance), the truth's distance
d^2 = (mu - truth)^T C^-1 (mu - truth), the estimated Monte Carlo error, timesteps, network
calls, seconds. Results are written after every posterior (atomically; a rerun skips what
is done). Three maps show how much information each cut keeps; they cannot show
calibration (that needs hundreds of validation maps).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

EXAMPLES = Path("examples/nbody64")
SPECTRUM = "models/nbody64-power.npz"  # the Gaussian P(k) likelihood fitted to N-body maps


def _row(g, truth: np.ndarray) -> dict:
    mean, cov = g.mean(), g.cov()
    d = mean - truth
    return {"mean": mean.tolist(), "cov": cov.tolist(),
            "area": float(np.sqrt(np.linalg.det(cov))),
            "d2": float(d @ np.linalg.solve(cov, d)),
            "evaluations": int(g.n_evaluations)}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    import diffinfer as di
    from diffinfer.inference.mc_control import MonteCarloWarning
    from diffinfer.io import write_json_atomic

    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {}
    model = di.load_model("nbody64")
    meta = json.loads((EXAMPLES / "examples.json").read_text())
    ladder = ["power"] + [int(t) for t in args.t_min.split(",")]
    for name in args.maps.split(","):
        rho = np.load(EXAMPLES / name).astype(np.float64)
        truth = np.array([meta[name]["theta"]["Omega_m"], meta[name]["theta"]["sigma_8"]])
        if args.reweighted:
            _reweighted(di, model, rho, truth, name, ladder[1:], args, state, out)
            continue
        for t in ladder:
            key = f"{name}:{t}"
            if key in state:
                continue
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MonteCarloWarning)
                if t == "power":
                    post = di.posterior(rho, model=model, likelihood="power",
                                        spectrum=SPECTRUM, progress=False)  # fmt: skip
                else:
                    post = di.posterior(rho, model=model, t_min=t, temperature=1.0,
                                        seed=args.seed, progress=False)  # fmt: skip
                g = post.grid()
            row = {"map": name, "t_min": t, "truth": truth.tolist(), **_row(g, truth),
                   "seconds": time.perf_counter() - start}  # fmt: skip
            if t != "power":
                mc = post.mc_error()
                row.update(mc_error=mc["mean"], n_timesteps=mc["n_timesteps"],
                           network_calls=mc["n_denoiser_calls"], direct=bool(mc["direct"]),
                           warned=any(issubclass(w.category, MonteCarloWarning)
                                      for w in caught))  # fmt: skip
            state[key] = row
            write_json_atomic(out, state)
            print(
                f"{key}: area {row['area']:.3g}, d2 {row['d2']:.2f}, {row['seconds']:.0f} s",
                flush=True,
            )


def _reweighted(di, model, rho, truth, name, ladder, args, state, out) -> None:
    """The whole bound's posterior once (seed + 1000, so that its timesteps are not those of
    the posteriors computed afresh), and each cut of the ladder from its grid's terms
    (:meth:`~diffinfer.inference.posterior.Posterior.scale_cut`, no network calls)."""
    from diffinfer.io import write_json_atomic

    if all(f"{name}:{t}:reweighted" in state for t in ladder):
        return
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = di.posterior(rho, model=model, temperature=1.0, seed=args.seed + 1000,
                            progress=False)  # fmt: skip
        post.grid()
        for t in ladder:
            g = post.scale_cut(t)
            state[f"{name}:{t}:reweighted"] = {
                "map": name, "t_min": t, "reweighted": True, "truth": truth.tolist(),
                **_row(g, truth), "mc_error": g.mc_error["mean"],
                "n_timesteps": g.mc_error["n_timesteps"], "edge_mass": float(g.edge_mass),
                "network_calls": post.mc_error()["n_denoiser_calls"],
                "seconds": time.perf_counter() - start,
            }  # fmt: skip
    write_json_atomic(out, state)
    print(f"{name}: reweighted cuts {ladder}", flush=True)


def table(args: argparse.Namespace) -> None:
    state = json.loads(Path(args.out).read_text())
    print(
        "| map | t_min | area / power's | area / t_min=1 | d² of the truth | MC error "
        "(Ω_m / σ_8, sd) | timesteps | network calls |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.maps.split(","):
        power, full = state.get(f"{name}:power"), state.get(f"{name}:1")
        rows = sorted((r for r in state.values() if r["map"] == name and r["t_min"] != "power"
                       and not r.get("reweighted")), key=lambda r: r["t_min"])  # fmt: skip
        for r in rows:
            rel_p = r["area"] / power["area"] if power else float("nan")
            rel_1 = r["area"] / full["area"] if full else float("nan")
            err = " / ".join(f"{e:.2f}" for e in r["mc_error"]) + (" (warned)" if r["warned"]
                                                                   else "")  # fmt: skip
            print(
                f"| {name} | {r['t_min']} | {rel_p:.2f} | {rel_1:.2f} | {r['d2']:.1f} | "
                f"{err} | {r['n_timesteps']}{' (grid)' if r['direct'] else ''} | "
                f"{r['network_calls']:,} |"
            )
        if power:
            print(f"| {name} | power spectrum | 1 | — | {power['d2']:.1f} | — | — | — |")
    print()
    print("| map | t_min | area reweighted / afresh | mean reweighted − afresh (Ω_m / σ_8, "
          "afresh sd) | joint MC error (sd) | timesteps kept | edge mass |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in args.maps.split(","):
        rows = sorted((r for r in state.values() if r["map"] == name and r.get("reweighted")
                       and f"{name}:{r['t_min']}" in state), key=lambda r: r["t_min"])  # fmt: skip
        for r in rows:
            f = state[f"{name}:{r['t_min']}"]
            sd = np.sqrt(np.diag(f["cov"]))
            shift = (np.array(r["mean"]) - f["mean"]) / sd
            joint = np.hypot(r["mc_error"], f["mc_error"])
            print(f"| {name} | {r['t_min']} | {r['area'] / f['area']:.2f} | "
                  f"{shift[0]:+.2f} / {shift[1]:+.2f} | {joint[0]:.2f} / {joint[1]:.2f} | "
                  f"{r['n_timesteps']} | {r['edge_mass']:.1g} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--t-min", default="1,3,10,30,100")
    parser.add_argument("--maps", default="map0.npy,map1.npy,map2.npy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/data/scale_cut_examples.json")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--reweighted", action="store_true",
                        help="cuts of one whole-bound posterior (scale_cut)")  # fmt: skip
    args = parser.parse_args()
    table(args) if args.table else run(args)


if __name__ == "__main__":
    main()
