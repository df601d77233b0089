"""Monte Carlo error of the VLB posterior: how far its mean moves between likelihood seeds.

    .venv/bin/python scripts/mc_shift.py [--denoiser oracle|network] [--n-maps 24] [--n-seeds 5]
        [--control-variate off|on|both] [--data DIR --split test|validation]

The VLB likelihood is an importance-sampled estimate from K timesteps with noise drawn from
a seed, so each seed gives a slightly different posterior. For each of ``--n-maps`` maps
(simulated at cosmologies uniform in the prior; seed 2026, never training or pilot maps) and
each estimator, computes the posterior (grid, temperature 1) under ``--n-seeds`` likelihood
seeds and reports the standard deviation across seeds of the posterior mean, in units of the
exact posterior's standard deviation: per parameter, the root mean square over maps, with
its sampling error. Estimators: the default proposal q(t) ~ w_t alpha_bar_t with 64
timesteps (the former default), the proposal fitted for ``--model`` (its card) with
``--timesteps`` timesteps each, and the sum of every term (``--full``); with the network,
``--control-variate`` runs them without (off), with (on) or both ways with the Wiener-filter
control variate of the likelihood (docs/likelihood.md).

The oracle denoiser runs the same estimator as the network (same timesteps, weights, noise)
at a fraction of the cost; ``--denoiser network`` checks a few maps with the network itself.
Writes a JSON table to ``--out`` (default docs/data/mc_shift_<denoiser>.json).

With ``--data`` the maps are the first ``--n-maps`` maps of a data set's split, in the order
``diffinfer calibrate`` takes them (map i here is map i of a study on that split), and the
denoiser is the network: there is no exact posterior, so the shift is in units of the
estimator's own posterior standard deviation (averaged over seeds), the unit of a
calibration study's z-scores. If the likelihood were right in expectation, a shift s would
alone spread the z-scores to about sqrt(1 + s^2); the per-seed z-scores are written too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from diffinfer.calibration.cases import test_case
from diffinfer.calibration.config import StudyConfig
from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.inference.posterior import posterior
from diffinfer.io import write_json_atomic
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64", help="model whose card proposal is used")
    parser.add_argument("--denoiser", choices=("oracle", "network"), default="oracle")
    parser.add_argument("--n-maps", type=int, default=24)
    parser.add_argument("--n-seeds", type=int, default=5)
    parser.add_argument("--timesteps", default="16,24,32,48", help="K of the fitted proposal")
    parser.add_argument("--old", type=int, default=64, help="K of the default proposal")
    parser.add_argument("--full", action="store_true", help="also the sum of every term")
    parser.add_argument("--control-variate", choices=("off", "on", "both"), default="off")
    parser.add_argument("--skip-old", action="store_true", help="leave out the default q")
    parser.add_argument("--data", help="maps of this data set's split (network only)")
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(2)
    net = load_model(args.model)
    if args.data is not None and args.denoiser != "network":
        parser.error("--data needs --denoiser network (the oracle knows log-normal maps only)")
    sim = LognormalSimulator(net.field, net.transform)
    model = DiffusionModel.oracle(sim, net.schedule) if args.denoiser == "oracle" else net
    q_card = np.asarray(net.card["likelihood"]["timestep_proposal"]["q"])
    estimators = [] if args.skip_old else [(f"default q, K={args.old}", "default", args.old, 1)]
    estimators += [(f"fitted q, K={k}", q_card, int(k), 1) for k in args.timesteps.split(",")]
    if args.full:
        estimators.append(("every term, K=1000", "default", None, 1))
    if args.denoiser == "network" and args.control_variate != "off":
        flags = {"on": [True], "both": [False, True]}[args.control_variate]
        estimators = [(name + (", control variate" if cv else ""), q, k, pairs, cv)
                      for name, q, k, pairs in estimators for cv in flags]  # fmt: skip
    else:
        estimators = [(*e, False) for e in estimators]
    if args.data is None:
        rng = np.random.default_rng(2026)
        thetas = sim.config.prior.low + sim.config.prior.width * rng.random((args.n_maps, 2))
        cases = ((sim.simulate(th, 1, seed=2026, row_offset=i)[0], th)
                 for i, th in enumerate(thetas))  # fmt: skip
    else:
        study = StudyConfig(model=args.model, data=args.data, split=args.split,
                            analyses=["diffusion"], n_maps=args.n_maps)  # fmt: skip
        cases = (test_case(study, i) for i in range(args.n_maps))
    rows = {name: [] for name, *_ in estimators}
    z_scores = {name: [] for name, *_ in estimators}
    seconds = {name: 0.0 for name, *_ in estimators}
    for i, (density, truth) in enumerate(cases):
        if args.data is None:
            exact = posterior(density, model=None, likelihood="exact").grid()
            sd = np.sqrt(np.diag(exact.cov()))
        for name, q, k, pairs, cv in estimators:
            means, sds = [], []
            for s in range(args.n_seeds):
                t0 = time.perf_counter()
                g = posterior(density, model=model, likelihood="vlb", n_timesteps=k,
                              proposal=q, seed=1000 * s + i, temperature=1.0,
                              n_noise=pairs, control_variate=cv, progress=False).grid()  # fmt: skip
                seconds[name] += time.perf_counter() - t0
                means.append(g.mean())
                sds.append(np.sqrt(np.diag(g.cov())))
            unit = sd if args.data is None else np.mean(sds, axis=0)
            rows[name].append(np.std(means, axis=0, ddof=1) / unit)
            z_scores[name].append(((np.array(means) - truth) / np.array(sds)).tolist())
        print(f"map {i + 1}/{args.n_maps} done", flush=True)
    table = {}
    print(f"\n{args.denoiser}, {args.n_maps} maps x {args.n_seeds} likelihood seeds")
    print("| estimator | MC shift Omega_m [sigma] | MC shift sigma_8 [sigma] | s per posterior |")
    print("|---|---|---|---|")
    for name, _, k, pairs, _cv in estimators:
        x = np.array(rows[name])  # (maps, 2)
        rms = np.sqrt(np.mean(x**2, axis=0))
        # error of an rms over maps: delta-method from the spread of the squares
        err = np.std(x**2, axis=0, ddof=1) / np.sqrt(len(x)) / (2 * rms)
        per = seconds[name] / (args.n_maps * args.n_seeds)
        table[name] = {"timesteps": k or 1000, "noise_draws": pairs, "rms_shift": rms.tolist(),
                       "rms_shift_se": err.tolist(), "seconds_per_posterior": per,
                       "z_scores": z_scores[name]}  # fmt: skip
        print(f"| {name} | {rms[0]:.3f} ± {err[0]:.3f} | {rms[1]:.3f} ± {err[1]:.3f} | {per:.2f} |")
    out = Path(args.out or f"docs/data/mc_shift_{args.denoiser}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"denoiser": args.denoiser, "model": args.model, "data": args.data,
                            "split": args.split if args.data else None,
                            "unit": "exact posterior sd" if args.data is None else
                            "the estimator's own posterior sd",
                            "n_maps": args.n_maps, "n_seeds": args.n_seeds,
                            "estimators": table})  # fmt: skip


if __name__ == "__main__":
    main()
