"""The goodness-of-fit check on clean held-out maps and on maps unlike the model's.

    .venv/bin/python scripts/gof_study.py [--n-maps 400] [--out docs/data/gof_study.json]

Clean maps: ``--n-maps`` held-out log-normal maps (cosmologies uniform in the prior box;
simulator seed 20261207, used nowhere else), each with the exact posterior of
``di.posterior(map, likelihood="exact")`` and its ``goodness_of_fit()`` (200 maps simulated at
posterior draws): the fraction with p >= 0.05 should be 0.95 within its binomial error. The
same for ``--n-diffusion`` of them with the default diffusion posterior of ``lognormal64``.
Maps unlike the model's, each for ``--n-bad`` cosmologies: undeclared model-space pixel noise
(sigma_n = 2 and 0.3), Gaussian smoothing by one pixel, a log-normal map of a box of half the
side (250 Mpc/h), and the shipped N-body example maps; the fraction flagged (p < 0.05), and
how far the exact posterior lies from the truth.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

SEED = 20261207


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-maps", type=int, default=400)
    parser.add_argument("--n-diffusion", type=int, default=60)
    parser.add_argument("--n-bad", type=int, default=20)
    parser.add_argument("--out", default="docs/data/gof_study.json")
    args = parser.parse_args()

    from scipy.ndimage import gaussian_filter

    import diffinfer as di
    from diffinfer.fields import FieldConfig
    from diffinfer.inference.goodness_of_fit import GoodnessOfFitWarning
    from diffinfer.io import write_json_atomic
    from diffinfer.simulators import LognormalSimulator

    warnings.simplefilter("ignore", GoodnessOfFitWarning)
    model = di.load_model("lognormal64")
    sim = LognormalSimulator(model.field, model.transform)
    low, width = np.array(sim.config.prior.low), np.array(sim.config.prior.width)
    rng = np.random.default_rng(SEED)
    theta = low + width * rng.random((args.n_maps, 2))
    maps = sim.simulate(theta, 1, seed=SEED)[:, 0]

    def check(density, likelihood="exact", **opts):
        post = di.posterior(density, model=model, likelihood=likelihood, progress=False, **opts)
        gof = post.goodness_of_fit()
        s = post.summary()
        mean = np.array([s["Omega_m"]["mean"], s["sigma_8"]["mean"]])
        sd = np.array([s["Omega_m"]["std"], s["sigma_8"]["std"]])
        return gof["p_value"], mean, sd

    def rate(passed: list[bool]) -> dict:
        n, k = len(passed), int(np.sum(passed))
        p = k / n
        return {"n": n, "pass_rate": round(p, 4), "se": round(float(np.sqrt(p * (1 - p) / n)), 4)}

    report: dict = {}
    p_clean = [check(m)[0] for m in maps]
    report["clean_exact"] = {**rate([p >= 0.05 for p in p_clean]),
                             "p_values": np.round(p_clean, 4).tolist()}  # fmt: skip
    print("clean, exact posterior:", {k: v for k, v in report["clean_exact"].items()
                                      if k != "p_values"}, flush=True)  # fmt: skip
    p_diff = [check(m, "vlb")[0] for m in maps[: args.n_diffusion]]
    report["clean_diffusion"] = {**rate([p >= 0.05 for p in p_diff]),
                                 "p_values": np.round(p_diff, 4).tolist()}  # fmt: skip
    print("clean, diffusion posterior:", {k: v for k, v in report["clean_diffusion"].items()
                                          if k != "p_values"}, flush=True)  # fmt: skip

    small = LognormalSimulator(FieldConfig(n_pix=64, box_size=250.0, depth=50.0),
                               model.transform)  # fmt: skip
    noise_rng = np.random.default_rng([SEED, 1])
    bad = {"noise 2": [], "noise 0.3": [], "smoothed 1 px": [], "box 250": [], "nbody": []}
    for i in range(args.n_bad):
        rho, truth = maps[i], theta[i]
        y = sim.transform.forward(rho).numpy()
        for name, sigma in (("noise 2", 2.0), ("noise 0.3", 0.3)):
            n = sigma * noise_rng.normal(size=y.shape)
            bad[name].append((sim.transform.inverse(y + n).numpy(), truth))
        g = gaussian_filter(np.log(rho), 1.0, mode="wrap")
        bad["smoothed 1 px"].append((np.exp(g) / np.exp(g).mean(), truth))
        bad["box 250"].append((small.simulate(truth, 1, seed=SEED + 1, row_offset=i)[0], truth))
    import json

    meta = json.loads(Path("examples/nbody64/examples.json").read_text())
    for name, entry in meta.items():
        th = np.array([entry["theta"]["Omega_m"], entry["theta"]["sigma_8"]])
        bad["nbody"].append((np.load(f"examples/nbody64/{name}"), th))
    for name, cases in bad.items():
        flagged, dist = [], []
        for density, truth in cases:
            p, mean, sd = check(density)
            flagged.append(p < 0.05)
            dist.append(float(np.max(np.abs(mean - truth) / sd)))
        report[name] = {"n": len(cases), "flagged": int(np.sum(flagged)),
                        "median_max_z": round(float(np.median(dist)), 1)}  # fmt: skip
        print(name, report[name], flush=True)
    write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
