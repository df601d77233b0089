"""Figures read at a glance: one style per analysis across figures, legends with the truth,
titles clear of the panels, a colour bar on the emulated maps, labelled axes."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from diffinfer.calibration.figures import (
    coverage_figure,
    predicted_vs_true_figure,
    ranks_figure,
    study_figures,
)
from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig
from diffinfer.inference.samples import Samples
from diffinfer.parameters import DEFAULT_PRIOR, PARAM_NAMES
from diffinfer.plots import draw_emulation, draw_triangle, triangle
from diffinfer.styles import STYLES, analysis_from_label, analysis_style, posterior_styles

TRUTH = np.array([0.3, 0.8])
ANALYSES = ("diffusion", "exact", "power")


def _gaussian(mean, sd, rho=-0.7, n=1500, seed=0) -> Samples:
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    return Samples(np.random.default_rng(seed).multivariate_normal(mean, cov, n), "grid")


def _same_colour(a, b) -> bool:
    return np.allclose(mcolors.to_rgb(a), mcolors.to_rgb(b))


def _legend_entries(legend) -> dict[str, object]:
    """Legend label -> its handle (a tuple handle: its line)."""
    out = {}
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        out[text.get_text()] = handle
    return out


def _handle_colour(handle):
    if hasattr(handle, "get_color"):
        return handle.get_color()
    return handle.get_facecolor()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _fake_report(analyses=ANALYSES, n=20) -> dict:
    z = np.linspace(0, 1, 11)
    curve = {"level": z.tolist(), "coverage": z.tolist(), "band_lower": (z * 0.8).tolist(),
             "band_upper": np.minimum(z * 1.2, 1).tolist(), "max_deviation": 0.05,
             "n": n}  # fmt: skip
    ranks = {p: {"n_bins": 4, "chi2_pvalue": 0.5} for p in PARAM_NAMES}
    return {"analyses": {a: {"hpd_coverage": curve, "tarp": curve, "ranks": ranks}
                         for a in analyses}}  # fmt: skip


def _fake_results(analyses=ANALYSES, n=12, n_draws=40) -> dict[str, list[dict]]:
    rng = np.random.default_rng(1)
    out = {}
    for a in analyses:
        res = []
        for i in range(n):
            truth = rng.uniform(DEFAULT_PRIOR.low, DEFAULT_PRIOR.high)
            draws = truth + rng.normal(0, 0.02, (n_draws, 2))
            res.append({"index": i, "truth": truth, "draws": draws, "mean": draws.mean(0),
                        "cov": np.cov(draws.T)})  # fmt: skip
        out[a] = res
    return out


def test_style_table_one_colour_and_line_style_per_analysis():
    assert {"diffusion", "exact", "power", "truth", "simulated", "emulated"} <= set(STYLES)
    colours = [mcolors.to_hex(s.colour) for s in STYLES.values()]
    assert len(set(colours)) == len(colours)
    posterior_ls = [str(STYLES[a].ls) for a in (*ANALYSES, "truth")]
    assert len(set(posterior_ls)) == len(posterior_ls)
    assert analysis_style("power-spectrum") is STYLES["power"]
    with pytest.raises(InputError, match="unknown analysis"):
        analysis_style("bayes")


@pytest.mark.parametrize("label, analysis", [
    ("diffusion likelihood", "diffusion"), ("exact log-normal likelihood", "exact"),
    ("power-spectrum likelihood", "power"), ("diffusion (oracle)", "diffusion"),
    ("Exact", "exact"), ("my own posterior", None), ("", None),
])  # fmt: skip
def test_label_first_word_names_the_analysis(label, analysis):
    assert analysis_from_label(label) == analysis


def test_posterior_styles_repeat_and_unknown():
    styles = posterior_styles(["a", "b", "c", "d"], ["exact", "exact", None, None])
    # two posteriors of one analysis (e.g. emcee and the grid): a shade of its colour each
    assert styles[0].colour == STYLES["exact"].colour != styles[1].colour
    assert styles[0].ls != styles[1].ls
    assert styles[2].colour != styles[3].colour
    assert {s.colour for s in styles[2:]}.isdisjoint({STYLES[a].colour for a in ANALYSES})
    assert [s.label for s in styles] == ["a", "b", "c", "d"]
    with pytest.raises(InputError, match="one name per posterior"):
        posterior_styles(["a", "b"], ["exact"])


def test_triangle_legend_truth_title_and_styles(tmp_path):
    samples = [_gaussian([0.29, 0.81], [0.03, 0.02]), _gaussian([0.31, 0.79], [0.02, 0.015])]
    labels = ["diffusion likelihood", "exact log-normal likelihood"]
    fig = draw_triangle(samples, labels=labels, truth=TRUTH, title="map1.npy")
    try:
        legend = fig.legends[-1]
        entries = _legend_entries(legend)
        assert list(entries) == [*labels, "truth"]
        assert len(fig.legends) == 1  # GetDist's own legend was replaced
        # the second posterior is drawn as lines in its analysis' colour and line style
        exact = entries[labels[1]]
        assert _same_colour(exact.get_color(), STYLES["exact"].colour)
        assert _same_colour(entries["truth"].get_color(), STYLES["truth"].colour)
        # the first (filled) posterior is translucent so that lines show through it
        fills = [c for ax in fig.axes for c in ax.collections
                 if type(c).__name__ in ("QuadContourSet", "ContourSet") and c.filled]  # fmt: skip
        assert fills and all(c.get_alpha() is not None and c.get_alpha() < 1 for c in fills)
        # the truth's marker in the 2D panel
        assert any(line.get_marker() == STYLES["truth"].marker
                   for ax in fig.axes for line in ax.lines)  # fmt: skip
        # the title clears every panel and the legend
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle
        assert title is not None and title.get_text() == "map1.npy"
        box = title.get_window_extent(renderer)
        for ax in fig.axes:
            assert not _overlap(box, ax.get_window_extent(renderer))
        assert not _overlap(box, legend.get_window_extent(renderer))
    finally:
        plt.close(fig)
    # the saving wrapper keeps its signature, and analyses override the labels' first words
    path = triangle(samples, tmp_path / "t.png", labels=["mine", "theirs"], truth=TRUTH,
                    analyses=["power", "diffusion"])  # fmt: skip
    assert path.is_file() and path.stat().st_size > 10_000


def test_triangle_analyses_argument_picks_styles():
    samples = [_gaussian([0.3, 0.8], [0.03, 0.02]), _gaussian([0.3, 0.8], [0.02, 0.01], seed=2)]
    fig = draw_triangle(samples, labels=["A", "B"], analyses=["power", "diffusion"])
    try:
        entries = _legend_entries(fig.legends[-1])
        assert list(entries) == ["A", "B"]  # no truth given, no truth entry
        assert _same_colour(entries["B"].get_color(), STYLES["diffusion"].colour)
    finally:
        plt.close(fig)
    with pytest.raises(InputError, match="unknown analysis"):
        draw_triangle(samples, labels=["A", "B"], analyses=["power", "bogus"])


@pytest.mark.parametrize("first", [*ANALYSES, "npe", "npe-power"])
def test_triangle_draws_any_analysis_first(first):
    """The first posterior is filled: dash-tuple line styles (the NPE references) must reach
    GetDist's filled contours as one style, not as one entry per contour level."""
    samples = [_gaussian([0.3, 0.8], [0.03, 0.02]), _gaussian([0.31, 0.79], [0.02, 0.01], 2)]
    second = "power" if first != "power" else "exact"
    fig = draw_triangle(samples, labels=["A", "B"], analyses=[first, second])
    try:
        entries = _legend_entries(fig.legends[-1])
        assert list(entries) == ["A", "B"]
    finally:
        plt.close(fig)


def test_same_analysis_same_colour_in_coverage_and_predicted_figures():
    report, results = _fake_report(), _fake_results()
    fig = coverage_figure(report)
    try:
        for ax in fig.axes:
            lines = {line.get_label(): line for line in ax.lines}
            drawn = []
            for a in ANALYSES:
                line = next(v for k, v in lines.items() if k.startswith(STYLES[a].label))
                assert _same_colour(line.get_color(), STYLES[a].colour)
                drawn.append(line.get_linestyle())
            assert len(set(drawn)) == len(ANALYSES)  # distinct line styles too
            assert ax.get_xlabel() and ax.get_ylabel()
        legend_texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert any(t.startswith("exact log-normal likelihood") for t in legend_texts)
    finally:
        plt.close(fig)
    fig = predicted_vs_true_figure(results, DEFAULT_PRIOR)
    try:
        for ax in fig.axes:
            handles, labels = ax.get_legend_handles_labels()
            by_label = dict(zip(labels, handles, strict=True))
            for a in ANALYSES:
                points = by_label[STYLES[a].label][0]  # the errorbar's data line
                assert _same_colour(points.get_color(), STYLES[a].colour)
            assert "truth" in " ".join(labels)
    finally:
        plt.close(fig)


def test_ranks_figure_axes_are_labelled_and_coloured():
    results = _fake_results()
    fig = ranks_figure(results, _fake_report())
    try:
        assert len(fig.axes) == 2 * len(ANALYSES)
        for ax in fig.axes:
            assert "rank of the true" in ax.get_xlabel()
            assert "posterior draws" in ax.get_xlabel()
            assert ax.get_ylabel()
        for row, a in enumerate(ANALYSES):
            step = next(p for p in fig.axes[2 * row].patches if p.get_label() == STYLES[a].label)
            assert _same_colour(step.get_edgecolor(), STYLES[a].colour)
    finally:
        plt.close(fig)


def test_study_figures_writes_the_figures(tmp_path):
    names = study_figures(tmp_path, _fake_results(("exact",)), _fake_report(("exact",)),
                          DEFAULT_PRIOR, n_triangles=0)  # fmt: skip
    assert names == ["coverage.png", "ranks.png", "predicted_vs_true.png"]
    assert all((tmp_path / "figures" / n).stat().st_size > 5_000 for n in names)


def test_emulation_figure_colour_bar_ticks_and_styles():
    rng = np.random.default_rng(0)
    maps = np.exp(rng.normal(-0.1, 0.4, (6, 32, 32)))
    sims = np.exp(rng.normal(-0.1, 0.4, (8, 32, 32)))
    field = FieldConfig(n_pix=32, box_size=250.0)
    fig = draw_emulation(maps, TRUTH, field, simulated=sims, n_show=3)
    try:
        bars = [ax for ax in fig.axes if "log_{10}" in ax.get_ylabel()]
        assert len(bars) == 1  # one shared colour bar for the maps
        images = [im for ax in fig.axes for im in ax.images]
        assert len(images) == 3 and len({im.get_clim() for im in images}) == 1
        spec = next(ax for ax in fig.axes if ax.get_xscale() == "log")
        lines = {line.get_label(): line for line in spec.lines}
        sim_line = next(v for k, v in lines.items() if k.startswith("simulated"))
        assert _same_colour(sim_line.get_color(), STYLES["simulated"].colour)
        handles, labels = spec.get_legend_handles_labels()
        em = dict(zip(labels, handles, strict=True))
        em_line = next(v for k, v in em.items() if k.startswith("emulated"))[0]
        assert _same_colour(em_line.get_color(), STYLES["emulated"].colour)
        # the k axis' tick labels do not overlap one another
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in spec.xaxis.get_ticklabels(which="both")
                 if t.get_visible() and t.get_text()]  # fmt: skip
        assert len(boxes) >= 2
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in itertools.pairwise(boxes))
    finally:
        plt.close(fig)
