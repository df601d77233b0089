"""Figures of a coverage study: coverage curves with simultaneous bands, TARP curves, rank
histograms, predicted vs true parameters, and GetDist triangles for a few maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffinfer.calibration import metrics
from diffinfer.parameters import PARAM_LABELS, PARAM_NAMES, PriorBox
from diffinfer.plots import _pyplot, save_figure_atomic

COLOURS = {"diffusion": "C0", "exact": "k", "power": "C1"}


def _save(fig, path: Path) -> str:
    return save_figure_atomic(fig, path, bbox_inches="tight").name


def study_figures(out: Path, results: dict[str, list[dict]], report: dict, box: PriorBox, *,
                  n_triangles: int = 3) -> list[str]:  # fmt: skip
    """Write the study's figures into ``out/figures``; return their names."""
    plt = _pyplot()
    fig_dir = Path(out) / "figures"
    fig_dir.mkdir(exist_ok=True)
    names = []

    # coverage: HPD and TARP, each with the simultaneous 95 % band of a calibrated posterior
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, key, title in ((axes[0], "hpd_coverage", "HPD expected coverage"),
                           (axes[1], "tarp", "TARP expected coverage")):  # fmt: skip
        first = next(iter(report["analyses"].values()))[key]
        z = np.asarray(first["level"])
        ax.fill_between(z, first["band_lower"], first["band_upper"], color="0.85",
                        label=f"95 % band ({first['n']} maps)")  # fmt: skip
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        for a, rep in report["analyses"].items():
            ax.plot(rep[key]["level"], rep[key]["coverage"], color=COLOURS.get(a),
                    label=f"{a} (max dev {rep[key]['max_deviation']:.3f})")  # fmt: skip
        ax.set(xlabel="credibility level", ylabel="coverage", title=title, xlim=(0, 1),
               ylim=(0, 1))  # fmt: skip
        ax.legend(fontsize=7, loc="upper left")
    names.append(_save(fig, fig_dir / "coverage.png"))

    # SBC rank histograms
    fig, axes = plt.subplots(len(results), 2, figsize=(8, 2.4 * len(results)), squeeze=False)
    for row, (a, res) in enumerate(results.items()):
        truths = np.stack([r["truth"] for r in res])
        draws = np.stack([r["draws"] for r in res])
        ranks = metrics.sbc_ranks(draws, truths)
        n_bins = report["analyses"][a]["ranks"][PARAM_NAMES[0]]["n_bins"]
        expected = len(res) / n_bins
        for j in range(2):
            ax = axes[row, j]
            ax.hist(ranks[:, j], bins=n_bins, range=(0, draws.shape[1] + 1),
                    color=COLOURS.get(a), alpha=0.7)  # fmt: skip
            sd = np.sqrt(expected * (1 - 1 / n_bins))
            ax.axhspan(expected - 2 * sd, expected + 2 * sd, color="0.85", zorder=0)
            p = report["analyses"][a]["ranks"][PARAM_NAMES[j]]["chi2_pvalue"]
            ax.set_title(f"{a}: rank of ${PARAM_LABELS[j]}$ (chi2 p = {p:.2g})", fontsize=8)
    fig.tight_layout()
    names.append(_save(fig, fig_dir / "ranks.png"))

    # predicted vs true
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for a, res in results.items():
        truths = np.stack([r["truth"] for r in res])
        means = np.stack([r["mean"] for r in res])
        stds = np.stack([np.sqrt(np.diag(r["cov"])) for r in res])
        for j in range(2):
            axes[j].errorbar(truths[:, j], means[:, j], stds[:, j], fmt=".", ms=3, lw=0.6,
                             color=COLOURS.get(a), alpha=0.6, label=a)  # fmt: skip
    for j in range(2):
        lo, hi = box.low[j], box.high[j]
        axes[j].plot([lo, hi], [lo, hi], "k:", lw=0.8)
        axes[j].set(xlabel=f"true ${PARAM_LABELS[j]}$",
                    ylabel=f"posterior mean ${PARAM_LABELS[j]}$")  # fmt: skip
        axes[j].legend(fontsize=7)
    names.append(_save(fig, fig_dir / "predicted_vs_true.png"))

    # triangles for the first maps every analysis has
    from diffinfer.plots import triangle
    from diffinfer.samples import Samples

    common = sorted(set.intersection(*[{r["index"] for r in res} for res in results.values()]))
    for index in common[:n_triangles]:
        samples, labels, truth = [], [], None
        for a, res in results.items():
            r = next(r for r in res if r["index"] == index)
            samples.append(Samples(r["draws"], "grid", info={"prior_box": box.to_dict()}))
            labels.append(a)
            truth = r["truth"]
        name = f"triangle_{index:05d}.png"
        triangle(samples, fig_dir / name, labels=labels, truth=truth, title=f"test map {index}")
        names.append(name)
    return names
