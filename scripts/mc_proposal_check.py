"""Whether a better timestep proposal would make the low-Omega_m corner cheaper: the Monte
Carlo variance per timestep of the log L differences across a posterior, under the model
card's proposal and under the best proposal for that map itself (docs/posterior.md).

    .venv/bin/python scripts/mc_proposal_check.py --maps 0,10,28 \
        --out docs/data/mc_error/proposal_check.json

For held-out corner maps of ``mc_error_study.py`` (their default posteriors in
docs/data/mc_error/corner give the centre and axes), every term t = 1 ... T is evaluated
once (one noise draw each, seed 123) at the posterior mean and one sd along each principal
axis, as the plain term and as the control variate's residual (what the default samples).
D_t is a term's change between the centre and a step; under a proposal q the variance per
timestep of the importance-sampled sum of D is sum_t D_t^2 / q_t - (sum_t D_t)^2. The best
proposal for the map, q* proportional to the rms of D_t over the two steps (smoothed over 10
timesteps and mixed with 10 % of the card's, as ``fit_timestep_proposal`` does), is fitted on
the very terms it is judged on: an upper bound on what any proposal fitted per model or per
region of the prior could gain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", default="0,10,28")
    parser.add_argument("--results", default="docs/data/mc_error/corner")
    parser.add_argument("--out", default="docs/data/mc_error/proposal_check.json")
    args = parser.parse_args()

    import torch

    import diffinfer as di
    from diffinfer.io import write_json_atomic
    from diffinfer.likelihoods.diffusion import DiffusionLikelihood
    from diffinfer.likelihoods.terms import term_weights, timestep_proposal

    sys.path.insert(0, str(Path(__file__).parent))
    from mc_error_study import held_out

    model = di.load_model("lognormal64")
    w = term_weights(model).numpy()
    q_card = timestep_proposal(model, "card")
    q_card = q_card / q_card.sum()
    t = np.arange(len(w))
    kernel = np.exp(-0.5 * ((t[:, None] - t[None, :]) / 10.0) ** 2)
    want = sorted(int(i) for i in args.maps.split(","))
    report = {}
    for i, truth, density in held_out(max(want) + 1, 0.2, model):
        if i not in want:
            continue
        r = json.loads((Path(args.results) / f"map{i:03d}-seed0.json").read_text())
        mu, cov = np.array(r["mean"]), np.array(r["cov"])
        evals, vecs = np.linalg.eigh(cov)
        points = np.array([mu] + [mu + np.sqrt(evals[j]) * vecs[:, j] for j in range(2)])
        like = DiffusionLikelihood(model, density, n_timesteps=None, seed=123, progress=False)
        plain, residual = [], []
        with torch.no_grad():
            for d, dw in like._differences(torch.as_tensor(points), wiener=True):
                e, ew = d.pow(2).sum(dim=(1, 2, 3)), dw.pow(2).sum(dim=(1, 2, 3))
                plain.append(e)
                residual.append(e - ew)
        row = {"truth": truth.tolist()}
        for name, err in (("plain", plain), ("control_variate", residual)):
            z = torch.cat(err).reshape(3, -1).numpy() * -w
            diff = z[1:] - z[:1]  # (2 steps, T)

            def variance(q: np.ndarray, diff=diff) -> float:
                return float(np.mean([np.sum(x**2 / q) - x.sum() ** 2 for x in diff]))

            best = np.sqrt(kernel @ np.mean(diff**2, axis=0) / kernel.sum(axis=1))
            best = 0.9 * best / best.sum() + 0.1 * q_card
            row[name] = {"variance_card": variance(q_card), "variance_best": variance(best),
                         "gain": variance(q_card) / variance(best)}  # fmt: skip
        report[f"map{i:03d}"] = row
        print(i, json.dumps(row), flush=True)
    write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
