"""Figure: diffusion-likelihood posteriors of one log-normal map against the exact posterior.

Evaluates, on a grid over +-4 Fisher sigma around the exact maximum, the exact likelihood and
the oracle-denoiser diffusion likelihood with L_0, the importance-sampled VLB (64 timesteps)
and the full VLB, and draws their 68 % and 95 % posterior contours (uniform prior).

    python scripts/likelihood_figure.py [--grid 21] [--out docs/figures/likelihood_oracle.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from diffinfer.diffusion import DiffusionModel
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.parameters import PARAM_LABELS
from diffinfer.simulators import LognormalSimulator
from diffinfer.styles import STYLES, AnalysisStyle

TRUTH = np.array([0.3, 0.8])
_DIFFUSION = STYLES["diffusion"]
# (label, diffusion-likelihood options or None for the exact likelihood, style): the exact
# likelihood and the full diffusion VLB in their analysis styles (diffinfer.styles.STYLES);
# the cheaper diffusion variants in a darker vermillion and in purple, with line styles of
# their own
CURVES: list[tuple[str, dict | None, AnalysisStyle]] = [
    ("exact log-normal likelihood", None, STYLES["exact"]),
    ("diffusion: L_0 (4 noise draws)", {"terms": "l0", "n_noise": 4},
     dataclasses.replace(_DIFFUSION, colour="#CC79A7", ls=(0, (1, 1)), lw=1.8)),
    ("diffusion: VLB, 64 timesteps", {"terms": "vlb", "n_timesteps": 64},
     dataclasses.replace(_DIFFUSION, colour="#7F3800", ls="-.", lw=1.4)),
    ("diffusion: VLB, all 1000 terms", {"terms": "vlb", "n_timesteps": None}, _DIFFUSION),
]  # fmt: skip


def levels(logp: np.ndarray) -> list[float]:
    """log p thresholds enclosing 95 % and 68 % of the grid posterior mass."""
    p = np.exp(logp - logp.max()).ravel()
    order = np.sort(p)[::-1]
    cdf = np.cumsum(order) / order.sum()
    return [float(np.log(order[np.searchsorted(cdf, q)]) + logp.max()) for q in (0.95, 0.68)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--out", default="docs/figures/likelihood_oracle.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = LognormalSimulator()
    oracle = DiffusionModel.oracle(sim)
    y = sim.transform.forward(sim.simulate(TRUTH, 1, seed=4)[0])
    fit = sim.maximum_likelihood(y)
    axes = [np.linspace(c - 4 * s, c + 4 * s, args.grid)
            for c, s in zip(fit.theta[0], fit.std[0], strict=True)]  # fmt: skip
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    theta = torch.as_tensor(mesh.reshape(-1, 2))
    fig, panels = plt.subplots(1, 2, figsize=(10, 4.4))
    for name, options, style in CURVES:
        if options is None:
            logp = sim.exact_log_prob(y, theta).numpy()
        else:
            with torch.no_grad():
                logp = DiffusionLikelihood(oracle, y, space="model", **options)(theta).numpy()
        logp = logp.reshape(mesh.shape[:2])
        panels[0].contour(axes[0], axes[1], logp.T, levels=levels(logp), colors=style.colour,
                          linestyles=[style.ls], linewidths=style.lw)  # fmt: skip
        panels[0].plot([], [], **style.line_kwargs(), label=name)
        post = np.exp(logp - logp.max())
        marginal = post.sum(axis=1)
        density = marginal / (marginal.sum() * (axes[0][1] - axes[0][0]))
        panels[1].plot(axes[0], density, **style.line_kwargs(), label=name)
        print(f"{name}: done", flush=True)
    truth = STYLES["truth"]
    panels[0].plot(*TRUTH, marker=truth.marker, ms=9, mec="white", mew=0.8, color=truth.colour,
                   ls="none", label="truth")  # fmt: skip
    panels[0].set_xlabel(f"${PARAM_LABELS[0]}$")
    panels[0].set_ylabel(f"${PARAM_LABELS[1]}$")
    panels[0].set_title("68 % and 95 % posterior contours")
    panels[0].legend(fontsize=8)
    panels[1].axvline(TRUTH[0], **truth.line_kwargs(), label="truth")
    panels[1].set_xlabel(f"${PARAM_LABELS[0]}$")
    panels[1].set_title(f"marginal posterior of ${PARAM_LABELS[0]}$")
    fig.suptitle("One 64² log-normal map, oracle denoiser: diffusion likelihoods vs exact")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
