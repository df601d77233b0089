"""Figures: the analyses' shared styles, posterior triangles, and emulated maps with their
statistics against the simulator's.

Every figure of the package draws an analysis in the style :data:`STYLES` gives it (colour,
line style, marker), so that a colour means the same thing in every figure: the diffusion
posterior is vermillion and solid, the exact log-normal one blue and dashed, the
power-spectrum one green and dash-dotted, the truth black and dotted. The colours are the
Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies,
and each analysis also has a line style of its own, so that a figure reads in grey scale too.

matplotlib is imported inside each function with the non-interactive Agg backend, so the
package imports without a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.fields.stats import power_spectrum
from diffinfer.styles import FILL_ALPHA, STYLES, posterior_styles

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectra(density: np.ndarray, box_size: float) -> tuple[np.ndarray, np.ndarray]:
    """k (bin centres) and the power spectra of delta = rho - 1 of each map, (M, n_bins)."""
    ps = [power_spectrum(m - 1.0, box_size) for m in np.asarray(density)]
    return ps[0].k, np.stack([p.power for p in ps])


def log_axis_ticks(axis: Axis) -> None:
    """Log-scale ticks (wavenumbers, spectra) whose labels do not overlap: majors at 1, 2 and
    5 times powers of ten labelled as plain numbers (``0.2``, ``1``, ``5``), unlabelled
    minors.

    Parameters
    ----------
    axis
        ``ax.xaxis`` (or ``ax.yaxis``) of a log-scaled axis.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10) / 1.0))
    axis.set_minor_formatter(NullFormatter())


def _maps(n: int) -> str:
    return f"{n} map" if n == 1 else f"{n} maps"


def draw_emulation(
    emulated: np.ndarray,
    theta: np.ndarray,
    field: FieldConfig,
    *,
    simulated: np.ndarray | None = None,
    title: str = "",
    n_show: int = 4,
) -> Figure:
    """The figure of :func:`emulation_figure`, not saved (for tests and further drawing).

    Parameters
    ----------
    emulated, theta, field, simulated, title, n_show
        As for :func:`emulation_figure`.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: the maps, their colour bar (label ``log10 ...``), and the spectra.
    """
    plt = pyplot()
    emulated = np.asarray(emulated)
    n_show = max(1, min(n_show, len(emulated)))
    fig = plt.figure(figsize=(2.6 * n_show + 5.4, 3.5), layout="constrained")
    maps_fig, spec_fig = fig.subfigures(1, 2, width_ratios=[2.6 * n_show + 0.6, 4.8])
    map_axes = np.atleast_1d(maps_fig.subplots(1, n_show))
    logs = np.log10(emulated[:n_show])
    vmin, vmax = np.percentile(logs, [1, 99])
    image = None
    for i, ax in enumerate(map_axes):
        image = ax.imshow(logs[i], vmin=vmin, vmax=vmax, cmap="magma", origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"emulated map {i}", fontsize=9)
    bar = maps_fig.colorbar(image, ax=list(map_axes), shrink=0.85, pad=0.02, extend="both")
    bar.set_label(r"$\log_{10}(\rho/\bar\rho)$ (shared scale)", fontsize=9)
    bar.ax.tick_params(labelsize=8)

    ax = spec_fig.subplots()
    k, p_em = spectra(emulated, field.box_size)
    mean = p_em.mean(0)
    err = p_em.std(0, ddof=1) / np.sqrt(len(p_em)) if len(p_em) > 1 else np.zeros_like(mean)
    if simulated is not None:
        sim = STYLES["simulated"]
        _, p_sim = spectra(simulated, field.box_size)
        m = p_sim.mean(0)
        s = p_sim.std(0, ddof=1) / np.sqrt(len(p_sim)) if len(p_sim) > 1 else np.zeros_like(m)
        ax.fill_between(k, m - 2 * s, m + 2 * s, alpha=0.35, color=sim.colour, lw=0)
        ax.plot(k, m, **sim.line_kwargs(),
                label=f"simulated ({_maps(len(p_sim))}, ±2σ of the mean)")  # fmt: skip
    em = STYLES["emulated"]
    ax.errorbar(k, mean, err, marker=em.marker, ms=3.5, capsize=0, elinewidth=1.0,
                **em.line_kwargs(lw=1.2),
                label=f"emulated ({_maps(len(p_em))}, ±1σ of the mean)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis_ticks(ax.xaxis)
    log_axis_ticks(ax.yaxis)
    ax.set_xlabel(r"$k$ [$h$/Mpc]")
    ax.set_ylabel(r"$P(k)$ of $\delta$ [(Mpc/$h$)$^2$]")
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title or rf"$\Omega_m$ = {theta[0]:.3f}, $\sigma_8$ = {theta[1]:.3f}", fontsize=10)
    return fig


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
    """A row of emulated maps with a colour bar, and their power spectra against the
    simulator's.

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

    Returns
    -------
    Path
        ``path``.
    """
    fig = draw_emulation(emulated, theta, field, simulated=simulated, title=title,
                         n_show=n_show)  # fmt: skip
    return save_figure_atomic(fig, path)


def draw_triangle(
    samples: list,
    *,
    labels: list[str] | None = None,
    truth: np.ndarray | None = None,
    title: str = "",
    analyses: Sequence[str | None] | None = None,
) -> Figure:
    """The figure of :func:`triangle`, not saved (for tests and further drawing).

    Parameters
    ----------
    samples, labels, truth, title, analyses
        As for :func:`triangle`.

    Returns
    -------
    matplotlib.figure.Figure
        With one figure legend (the posteriors' labels, then ``truth``).
    """
    pyplot()
    from getdist import plots as gdplots
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from diffinfer.parameters import PARAM_NAMES

    if not samples:
        raise InputError("triangle needs at least one Samples object to plot")
    labels = list(labels) if labels else [s.info.get("label", s.method) for s in samples]
    if len(labels) != len(samples):
        raise InputError(f"{len(labels)} labels for {len(samples)} sample sets")
    styles = posterior_styles(labels, analyses)
    if truth is not None:
        truth = np.asarray(truth, dtype=float).reshape(-1)
        if truth.shape != (len(PARAM_NAMES),) or not np.isfinite(truth).all():
            raise InputError(f"truth must be {len(PARAM_NAMES)} finite numbers "
                             f"({', '.join(PARAM_NAMES)}); got {truth}")  # fmt: skip
    roots = [s.to_getdist(label) for s, label in zip(samples, labels, strict=True)]
    several = len(roots) > 1
    # the first posterior filled (translucent when others follow), the others as lines over
    # it: no posterior hides another's 68 % region
    # (a filled contour takes its line styles per level: a dash tuple goes in a list, else
    # matplotlib reads its offset and its dashes as the styles of two levels)
    contour_args = [
        {"filled": i == 0, "color": st.colour, "lw": st.lw,
         "ls": [st.ls] if i == 0 and isinstance(st.ls, tuple) else st.ls,
         **({"alpha": FILL_ALPHA if several else 1.0} if i == 0 else {})}
        for i, st in enumerate(styles)
    ]  # fmt: skip
    line_args = [{"color": st.colour, "ls": st.ls, "lw": st.lw} for st in styles]
    g = gdplots.get_subplot_plotter(width_inch=6)
    g.settings.legend_fontsize = 9
    g.triangle_plot(roots, list(PARAM_NAMES), filled=[c["filled"] for c in contour_args],
                    contour_args=contour_args, line_args=line_args,
                    legend_labels=labels)  # fmt: skip
    fig = g.fig
    n = len(PARAM_NAMES)
    handles: list = []
    for i, st in enumerate(styles):
        if i == 0:  # the fill with the line style of its marginals
            patch = Patch(facecolor=st.colour, alpha=FILL_ALPHA if several else 0.8, lw=0)
            handles.append((patch, Line2D([], [], **st.line_kwargs())))
        else:
            handles.append(Line2D([], [], **st.line_kwargs()))
    legend_labels = list(labels)
    if truth is not None:
        tr = STYLES["truth"]
        for i in range(n):
            g.subplots[i, i].axvline(truth[i], **tr.line_kwargs(), zorder=5)
            for i2 in range(i + 1, n):
                ax = g.subplots[i2, i]
                ax.axvline(truth[i], **tr.line_kwargs(), zorder=5)
                ax.axhline(truth[i2], **tr.line_kwargs(), zorder=5)
                ax.plot(truth[i], truth[i2], marker=tr.marker, ms=9, color=tr.colour,
                        mec="white", mew=0.8, ls="none", zorder=6)  # fmt: skip
        handles.append(Line2D([], [], marker=tr.marker, ms=8, mec="white", mew=0.8,
                              **tr.line_kwargs()))  # fmt: skip
        legend_labels.append(tr.label)
    if getattr(g, "legend", None) is not None:
        g.legend.remove()
    corner = g.subplots[0, 0]
    fig.legend(handles, legend_labels, loc="upper right", bbox_to_anchor=(n, 1),
               bbox_transform=corner.transAxes, borderaxespad=0, fontsize=9,
               handlelength=2.6, handler_map={tuple: HandlerTuple(ndivide=1)})  # fmt: skip
    if title:
        # above the panels (the legend fills the empty upper right), centred on the grid
        fig.canvas.draw()
        top = corner.get_position().y1
        left = corner.get_position().x0
        right = g.subplots[n - 1, n - 1].get_position().x1
        fig.suptitle(title, x=(left + right) / 2, y=top + 0.015, va="bottom", fontsize=11)
    return fig


def triangle(
    samples: list,
    path: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    truth: np.ndarray | None = None,
    title: str = "",
    analyses: Sequence[str | None] | None = None,
) -> Path:
    """GetDist triangle plot comparing posteriors, with the true theta marked.

    One posterior is drawn filled; with several, the first is filled translucently and the
    others are drawn as 68 % and 95 % contour lines over it, each analysis in its
    :data:`STYLES` colour and line style, so that none hides another's 68 % region.

    Parameters
    ----------
    samples
        :class:`~diffinfer.inference.samples.Samples` objects (e.g. diffusion vs exact).
    path
        Output image, written atomically.
    labels
        Legend labels (default: each sample's ``info["label"]``).
    truth
        (Omega_m, sigma_8) to mark (lines and a marker, legend entry ``truth``).
    title
        Figure title (e.g. the map's name), above the panels.
    analyses
        The analysis of each posterior (``diffusion``, ``exact``, ``power``; None for none),
        which picks its style; default: the analysis the label's first word names, else
        the next free colour.

    Returns
    -------
    Path
        ``path``.
    """
    fig = draw_triangle(samples, labels=labels, truth=truth, title=title, analyses=analyses)
    return save_figure_atomic(fig, path, bbox_inches="tight")


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
        pyplot().close(fig)
    return path
