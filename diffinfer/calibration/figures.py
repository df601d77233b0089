"""Figures of a coverage study: coverage curves with simultaneous bands, TARP curves, rank
histograms, predicted vs true parameters, and GetDist triangles for a few maps.

Each analysis is drawn in its :data:`diffinfer.styles.STYLES` colour and line style, the same
as in ``diffinfer infer``'s triangle and every other figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffinfer.calibration import metrics
from diffinfer.parameters import PARAM_LABELS, PARAM_NAMES, PriorBox
from diffinfer.plots import pyplot, save_figure_atomic
from diffinfer.styles import STYLES, AnalysisStyle, posterior_styles

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Grey of the bands a calibrated posterior stays inside.
BAND_COLOUR = "0.86"


def _save(fig, path: Path) -> str:
    return save_figure_atomic(fig, path, bbox_inches="tight").name


def _styles(analyses: list[str]) -> dict[str, AnalysisStyle]:
    """The study's analyses' styles (known names; others take the free colours)."""
    names = [a if a in STYLES else None for a in analyses]
    styles = posterior_styles([STYLES[a].label if a in STYLES else a for a in analyses], names)
    return dict(zip(analyses, styles, strict=True))


def coverage_figure(report: dict) -> Figure:
    """Expected coverage of the HPD regions and TARP, each against the simultaneous 95 %
    band of a calibrated posterior.

    Parameters
    ----------
    report
        The study report (``report["analyses"][name]["hpd_coverage"]`` and ``["tarp"]``).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes; one line per analysis, labelled with the analysis' legend label.
    """
    plt = pyplot()
    styles = _styles(list(report["analyses"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, key, title in ((axes[0], "hpd_coverage", "HPD regions"),
                           (axes[1], "tarp", "TARP")):  # fmt: skip
        first = next(iter(report["analyses"].values()))[key]
        z = np.asarray(first["level"])
        band = f"95 % band of a calibrated posterior ({first['n']} maps)"
        ax.fill_between(z, first["band_lower"], first["band_upper"], color=BAND_COLOUR, lw=0,
                        label=band)  # fmt: skip
        ax.plot([0, 1], [0, 1], color="0.45", lw=0.8, ls=(0, (1, 2)), label="calibrated")
        for a, rep in report["analyses"].items():
            st = styles[a]
            ax.plot(rep[key]["level"], rep[key]["coverage"], **st.line_kwargs(),
                    label=f"{st.label} (max dev {rep[key]['max_deviation']:.3f})")  # fmt: skip
        ax.set(xlabel="credibility level", ylabel="fraction of maps whose truth is inside",
               title=f"{title}: expected coverage", xlim=(0, 1), ylim=(0, 1))  # fmt: skip
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def ranks_figure(results: dict[str, list[dict]], report: dict) -> Figure:
    """SBC histograms of the rank of the truth among each map's posterior draws.

    Parameters
    ----------
    results
        Per analysis, the per-map results (``truth``, ``draws``).
    report
        The study report (bins and chi^2 p-values of ``["ranks"]``).

    Returns
    -------
    matplotlib.figure.Figure
        One row per analysis, one column per parameter; every axes has x and y labels.
    """
    plt = pyplot()
    styles = _styles(list(results))
    fig, axes = plt.subplots(len(results), 2, figsize=(9, 2.7 * len(results) + 0.3),
                             squeeze=False)  # fmt: skip
    for row, (a, res) in enumerate(results.items()):
        st = styles[a]
        truths = np.stack([r["truth"] for r in res])
        n_draws = min(len(r["draws"]) for r in res)
        draws = np.stack([r["draws"][:n_draws] for r in res])
        ranks = metrics.sbc_ranks(draws, truths)
        # the chi^2 test's bins hold >= 5 maps each: 1-2 bins for a small study, which show
        # nothing; the histogram takes at least 8 bins (or one per map), its band their own
        n_bins = max(report["analyses"][a]["ranks"][PARAM_NAMES[0]]["n_bins"],
                     min(8, len(res)))  # fmt: skip
        expected = len(res) / n_bins
        sd = np.sqrt(expected * (1 - 1 / n_bins))
        for j in range(2):
            ax = axes[row, j]
            ax.axhspan(max(expected - 2 * sd, 0), expected + 2 * sd, color=BAND_COLOUR, lw=0,
                       zorder=0, label="uniform ranks ±2σ")  # fmt: skip
            # outlined (the band shows through): counts outside the band read at a glance
            ax.hist(ranks[:, j], bins=n_bins, range=(0, n_draws + 1), histtype="step",
                    **st.line_kwargs(lw=2.0), zorder=2, label=st.label)  # fmt: skip
            ax.axhline(expected, color="0.45", lw=0.8, ls=(0, (1, 2)), zorder=1)
            p = report["analyses"][a]["ranks"][PARAM_NAMES[j]]["chi2_pvalue"]
            ax.set_title(f"{st.label}: ${PARAM_LABELS[j]}$ (χ² p = {p:.2g})", fontsize=9)
            ax.set_xlabel(f"rank of the true ${PARAM_LABELS[j]}$ among the {n_draws} "
                          "posterior draws", fontsize=8)  # fmt: skip
            ax.set_ylabel(f"maps per bin ({len(res)} maps)", fontsize=8)
            ax.set_xlim(0, n_draws + 1)
            if row == 0 and j == 0:
                ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def predicted_vs_true_figure(results: dict[str, list[dict]], box: PriorBox) -> Figure:
    """Posterior mean (±1 posterior standard deviation) against the true parameters.

    Parameters
    ----------
    results
        Per analysis, the per-map results (``truth``, ``mean``, ``cov``).
    box
        Prior box (axis ranges).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes (one per parameter), each with the line mean = truth.
    """
    plt = pyplot()
    styles = _styles(list(results))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    truth = STYLES["truth"]
    for j in range(2):
        lo, hi = box.low[j], box.high[j]
        axes[j].plot([lo, hi], [lo, hi], **truth.line_kwargs(lw=1.0), label="mean = truth")
    n = len(results)
    for k, (a, res) in enumerate(results.items()):
        st = styles[a]
        truths = np.stack([r["truth"] for r in res])
        means = np.stack([r["mean"] for r in res])
        stds = np.stack([np.sqrt(np.diag(r["cov"])) for r in res])
        for j in range(2):
            # analyses side by side around the truth, so that their bars do not overlap
            shift = (k - (n - 1) / 2) * 0.004 * (box.high[j] - box.low[j])
            axes[j].errorbar(truths[:, j] + shift, means[:, j], stds[:, j], ls="none",
                             marker=st.marker, ms=3.5, color=st.colour, elinewidth=0.8,
                             alpha=0.8, label=st.label)  # fmt: skip
    for j in range(2):
        axes[j].set(xlabel=f"true ${PARAM_LABELS[j]}$",
                    ylabel=f"posterior mean ${PARAM_LABELS[j]}$ (±1 std)")  # fmt: skip
        axes[j].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def study_figures(out: Path, results: dict[str, list[dict]], report: dict, box: PriorBox, *,
                  n_triangles: int = 3) -> list[str]:  # fmt: skip
    """Write the study's figures into ``out/figures``; return their names.

    Parameters
    ----------
    out
        Study directory.
    results
        Per analysis, the per-map results.
    report
        The study report.
    box
        Prior box.
    n_triangles
        Triangles drawn, for the first maps every analysis has.

    Returns
    -------
    list of str
        File names in ``out/figures``.
    """
    fig_dir = Path(out) / "figures"
    fig_dir.mkdir(exist_ok=True)
    names = [
        _save(coverage_figure(report), fig_dir / "coverage.png"),
        _save(ranks_figure(results, report), fig_dir / "ranks.png"),
        _save(predicted_vs_true_figure(results, box), fig_dir / "predicted_vs_true.png"),
    ]

    # triangles for the first maps every analysis has
    from diffinfer.inference.samples import Samples
    from diffinfer.plots import triangle

    styles = _styles(list(results))
    common = sorted(set.intersection(*[{r["index"] for r in res} for res in results.values()]))
    for index in common[:n_triangles]:
        samples, truth = [], None
        for res in results.values():
            r = next(r for r in res if r["index"] == index)
            samples.append(Samples(r["draws"], "grid", info={"prior_box": box.to_dict()}))
            truth = r["truth"]
        name = f"triangle_{index:05d}.png"
        labels = []
        for a, res in results.items():  # a tempered analysis says so: L^(1/tau) is
            tau = float(np.asarray(res[0].get("temperature", 1.0)))  # wider or narrower
            labels.append(styles[a].label + ("" if tau == 1.0 else f", tempered by {tau:.3g}"))
        triangle(samples, fig_dir / name, labels=labels,
                 truth=truth, title=f"test map {index}",
                 analyses=[a if a in STYLES else None for a in results])  # fmt: skip
        names.append(name)
    return names
