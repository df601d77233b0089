"""Figures: emulated maps and their statistics against the simulator's.

matplotlib is imported inside each function with the non-interactive Agg backend, so the
package imports without a display.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.fields.stats import power_spectrum


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectra(density: np.ndarray, box_size: float) -> tuple[np.ndarray, np.ndarray]:
    """k (bin centres) and the power spectra of delta = rho - 1 of each map, (M, n_bins)."""
    ps = [power_spectrum(m - 1.0, box_size) for m in np.asarray(density)]
    return ps[0].k, np.stack([p.power for p in ps])


def emulation_figure(
    emulated: np.ndarray,
    theta: np.ndarray,
    field: FieldConfig,
    path: str | os.PathLike,
    *,
    simulated: np.ndarray | None = None,
    title: str = "",
    n_show: int = 4,
) -> Path:
    """A row of emulated maps and their power spectra against the simulator's.

    Parameters
    ----------
    emulated
        Emulated densities (M, N, N) at one theta.
    theta
        (Omega_m, sigma_8) of the maps.
    field
        Geometry (box size for the spectra).
    path
        Output image (PNG, PDF, ...), written atomically.
    simulated
        Simulated densities at the same theta, for the reference band.
    title
        Figure title.
    n_show
        Maps shown.
    """
    plt = _pyplot()
    n_show = min(n_show, len(emulated))
    fig = plt.figure(figsize=(3.0 * (n_show + 2), 3.4))
    grid = fig.add_gridspec(1, n_show + 2)
    vmin, vmax = np.percentile(np.log10(emulated[:n_show]), [1, 99])
    for i in range(n_show):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(np.log10(emulated[i]), vmin=vmin, vmax=vmax, cmap="magma")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"emulated {i}", fontsize=9)
    ax = fig.add_subplot(grid[0, n_show:])
    k, p_em = spectra(emulated, field.box_size)
    mean, err = p_em.mean(0), p_em.std(0, ddof=1) / np.sqrt(len(p_em))
    ax.errorbar(k, mean, err, fmt="o", ms=3, label=f"emulated ({len(p_em)} maps)")
    if simulated is not None:
        _, p_sim = spectra(simulated, field.box_size)
        m, s = p_sim.mean(0), p_sim.std(0, ddof=1) / np.sqrt(len(p_sim))
        ax.fill_between(k, m - 2 * s, m + 2 * s, alpha=0.3, color="k", lw=0)
        ax.plot(k, m, "k-", lw=1, label=f"simulated ({len(p_sim)} maps, ±2σ of mean)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$k$ [$h$/Mpc]")
    ax.set_ylabel(r"$P(k)$ of $\delta$ [(Mpc/$h$)$^2$]")
    ax.legend(fontsize=8)
    fig.suptitle(title or rf"$\Omega_m$ = {theta[0]:.3f}, $\sigma_8$ = {theta[1]:.3f}", fontsize=10)
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def triangle(
    samples: list,
    path: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    truth: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """GetDist triangle plot comparing posteriors, with the true theta marked.

    Parameters
    ----------
    samples
        :class:`~diffinfer.samples.Samples` objects (e.g. diffusion vs exact).
    path
        Output image, written atomically.
    labels
        Legend labels (default: each sample's ``info["label"]``).
    truth
        (Omega_m, sigma_8) to mark.
    title
        Figure title.
    """
    _pyplot()
    from getdist import plots as gdplots

    from diffinfer.parameters import PARAM_NAMES

    if not samples:
        raise InputError("triangle needs at least one Samples object to plot")
    labels = labels or [s.info.get("label", s.method) for s in samples]
    if len(labels) != len(samples):
        raise InputError(f"{len(labels)} labels for {len(samples)} sample sets")
    roots = [s.to_getdist(label) for s, label in zip(samples, labels, strict=True)]
    g = gdplots.get_subplot_plotter(width_inch=6)
    markers = None if truth is None else dict(zip(PARAM_NAMES, map(float, truth), strict=True))
    g.triangle_plot(roots, list(PARAM_NAMES), filled=True, legend_labels=labels, markers=markers)
    if title:
        g.fig.suptitle(title, fontsize=10)
    return save_figure_atomic(g.fig, path, bbox_inches="tight")


def save_figure_atomic(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure through a temporary file renamed into place (removed if the
    save fails), then close the figure; returns the path."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        fig.savefig(tmp, **{"dpi": 110, **savefig_kwargs})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        _pyplot().close(fig)
    return path
