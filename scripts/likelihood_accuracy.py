"""What each diffusion-likelihood approximation costs, measured with the oracle denoiser.

For log-normal maps at several test cosmologies, every approximation (L_0, sets of terms,
the importance-sampled and the full VLB) is evaluated on a grid covering the exact
posterior (+-4 Fisher sigma around the exact maximum-likelihood point) and compared with the
exact log-likelihood: the rms error of log L differences in nats (over grid points within 6
nats of the exact maximum), and the shift of the posterior mean and the ratio of posterior
widths, in units of the exact posterior's standard deviation (uniform prior, grid
integration).

    python scripts/likelihood_accuracy.py [--maps 4] [--grid 15] [--model oracle|NAME]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.simulators import LognormalSimulator

APPROXIMATIONS = [
    ("L_0", {"terms": "l0", "n_noise": 4}),
    ("terms 0-9", {"terms": list(range(10)), "n_noise": 4}),
    ("terms 0-99, every 10th", {"terms": list(range(0, 100, 10)), "n_noise": 4}),
    ("VLB, 16 timesteps", {"terms": "vlb", "n_timesteps": 16}),
    ("VLB, 64 timesteps", {"terms": "vlb", "n_timesteps": 64}),
    ("VLB, 256 timesteps", {"terms": "vlb", "n_timesteps": 256}),
    ("VLB, all 1000 terms", {"terms": "vlb", "n_timesteps": None}),
]


def grid_moments(theta: np.ndarray, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation per parameter from log p on a regular grid."""
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = w @ theta
    std = np.sqrt(w @ (theta - mean) ** 2)
    return mean, std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=4, help="test maps")
    parser.add_argument("--grid", type=int, default=15, help="grid points per parameter")
    parser.add_argument("--model", default="oracle", help="'oracle' or a model name/directory")
    parser.add_argument("--seed", type=int, default=100, help="seed of the test maps")
    args = parser.parse_args()
    sim = LognormalSimulator()
    model = DiffusionModel.oracle(sim) if args.model == "oracle" else load_model(args.model)
    sim = LognormalSimulator(model.field, model.transform)
    rng = np.random.default_rng(args.seed)
    prior = sim.config.prior
    truths = rng.uniform(np.add(prior.low, 0.2 * np.asarray(prior.width)),
                         np.subtract(prior.high, 0.2 * np.asarray(prior.width)),
                         size=(args.maps, 2))  # fmt: skip
    rows: dict[str, list] = {name: [] for name, _ in APPROXIMATIONS}
    for i, truth in enumerate(truths):
        y = sim.transform.forward(sim.simulate(truth, 1, seed=args.seed + i)[0])
        fit = sim.maximum_likelihood(y)
        centre, std = fit.theta[0], fit.std[0]
        axes = [
            np.linspace(c - 4 * s, c + 4 * s, args.grid) for c, s in zip(centre, std, strict=True)
        ]
        theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        theta = theta[prior.contains(theta)]
        exact = sim.exact_log_prob(y, torch.as_tensor(theta)).numpy()
        m_ex, s_ex = grid_moments(theta, exact)
        near = exact > exact.max() - 6
        for name, options in APPROXIMATIONS:
            t0 = time.perf_counter()
            like = DiffusionLikelihood(model, y, space="model", seed=i, **options)
            with torch.no_grad():
                approx = like(torch.as_tensor(theta)).numpy()
            seconds = time.perf_counter() - t0
            d = (approx - approx[near].mean()) - (exact - exact[near].mean())
            m, s = grid_moments(theta, approx)
            rms = np.sqrt(np.mean(d[near] ** 2))
            cost = [like.n_evaluations_per_theta, seconds / len(theta)]
            rows[name].append([rms, *((m - m_ex) / s_ex), *(s / s_ex), *cost])
        print(f"map {i}: truth {truth.round(3)}, exact posterior mean {m_ex.round(4)} "
              f"+- {s_ex.round(4)}", flush=True)  # fmt: skip
    print(f"\n{args.maps} maps, model {args.model}, {args.grid}^2 grid over +-4 sigma")
    print("| likelihood | evaluations per theta | rms error of differences (nats) | "
          "shift Omega_m (sigma) | shift sigma_8 (sigma) | width ratio Omega_m | "
          "width ratio sigma_8 | seconds per theta |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        print(f"| {name} | {int(v[0, 5])} | {v[:, 0].mean():.2f} | "
              f"{np.mean(np.abs(v[:, 1])):.2f} | {np.mean(np.abs(v[:, 2])):.2f} | "
              f"{v[:, 3].mean():.2f} | {v[:, 4].mean():.2f} | {v[:, 6].mean():.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
