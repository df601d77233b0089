"""The analyses' shared styles: one colour, line style and marker per analysis, in every figure.

The diffusion posterior is vermillion and solid, the exact log-normal one blue and dashed, the
power-spectrum one green and dash-dotted, the truth black and dotted. The colours are the
Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies,
and each analysis also has a line style of its own, so that a figure reads in grey scale too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffinfer.errors import InputError


@dataclass(frozen=True)
class AnalysisStyle:
    """How one analysis is drawn in every figure.

    Attributes
    ----------
    name
        The analysis (a key of :data:`STYLES`).
    colour
        Matplotlib colour (hex string).
    ls
        Matplotlib line style; each analysis has its own.
    marker
        Marker for points (posterior means, the truth, binned spectra).
    label
        Legend label.
    lw
        Line width in points.
    """

    name: str
    colour: str
    ls: str | tuple
    marker: str
    label: str
    lw: float = 1.6

    def line_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """``color``, ``ls`` and ``lw`` for :meth:`matplotlib.axes.Axes.plot`, updated by
        ``overrides``."""
        return {"color": self.colour, "ls": self.ls, "lw": self.lw, **overrides}


#: The style of each analysis: the one place figures take their colours and line styles
#: from. ``diffusion`` is the diffusion-likelihood posterior (network or oracle denoiser),
#: ``exact`` the exact log-normal likelihood's, ``power`` the power-spectrum likelihood's,
#: ``npe``, ``npe-power`` and ``npe-diffusion`` the neural posterior estimators' (P(k) + CNN,
#: P(k) alone, P(k) + the diffusion likelihood's compression);
#: ``simulated`` and ``emulated`` are the maps of the emulator figures.
STYLES: dict[str, AnalysisStyle] = {
    s.name: s
    for s in (
        AnalysisStyle("diffusion", "#D55E00", "-", "o", "diffusion likelihood"),
        AnalysisStyle("exact", "#0072B2", "--", "s", "exact log-normal likelihood"),
        AnalysisStyle("power", "#009E73", "-.", "^", "power-spectrum likelihood"),
        AnalysisStyle("npe", "#CC79A7", (0, (1, 1)), "D", "NPE (P(k) + CNN)"),
        AnalysisStyle("npe-power", "#999999", (0, (5, 1, 1, 1)), "v", "NPE (P(k))"),
        AnalysisStyle(
            "npe-diffusion", "#F0E442", (0, (3, 1)), "P", "NPE (P(k) + diffusion compression)"
        ),
        AnalysisStyle("truth", "#000000", ":", "X", "truth", lw=1.3),
        AnalysisStyle("simulated", "#56B4E9", "-", "None", "simulated"),
        AnalysisStyle("emulated", "#E69F00", "--", "o", "emulated"),
    )
}


#: Other words that name an analysis (the first word of a legend label, lower case).
_ALIASES = {"power-spectrum": "power", "spectrum": "power", "oracle": "diffusion",
            "network": "diffusion", "simulation": "simulated", "simulations": "simulated",
            "emulator": "emulated"}  # fmt: skip


#: Colours and line styles of posteriors that are none of the analyses (the rest of the
#: Okabe-Ito palette, then grey).
_FALLBACK: tuple[tuple[str, tuple], ...] = (
    ("#CC79A7", (0, (1, 1))),
    ("#56B4E9", (0, (5, 1, 1, 1, 1, 1))),
    ("#E69F00", (0, (8, 2))),
    ("#999999", (0, (3, 1, 1, 1))),
)


#: Line styles that tell apart two posteriors of the same analysis in one figure.
_REPEAT_LS: tuple[tuple, ...] = ((0, (1, 1)), (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))


#: Opacity of the first posterior's filled contours when others are drawn over them.
FILL_ALPHA = 0.6


def analysis_from_label(label: str) -> str | None:
    """The analysis a legend label names by its first word, or None.

    Parameters
    ----------
    label
        E.g. ``"diffusion likelihood"``, ``"exact (reference)"``,
        ``"power-spectrum likelihood"``.

    Returns
    -------
    str or None
        A key of :data:`STYLES`, or None when the first word names none.
    """
    first = re.split(r"[\s(,:;]+", str(label).strip().lower(), maxsplit=1)[0]
    return first if first in STYLES else _ALIASES.get(first)


def analysis_style(name: str) -> AnalysisStyle:
    """The style of an analysis.

    Parameters
    ----------
    name
        A key of :data:`STYLES` (``diffusion``, ``exact``, ``power``, ``truth``,
        ``simulated``, ``emulated``) or an alias such as ``power-spectrum`` or ``oracle``.

    Returns
    -------
    AnalysisStyle

    Raises
    ------
    InputError
        If ``name`` is no analysis.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    key = _ALIASES.get(key, key)
    if key not in STYLES:
        raise InputError(f"unknown analysis {name!r}; known: {', '.join(STYLES)}")
    return STYLES[key]


def posterior_styles(
    labels: Sequence[str], analyses: Sequence[str | None] | None = None
) -> list[AnalysisStyle]:
    """The style of each posterior of one figure, labelled as given.

    Parameters
    ----------
    labels
        Legend labels, one per posterior.
    analyses
        The analysis of each posterior (keys of :data:`STYLES`; None for none of them).
        Default: the analysis the label's first word names (:func:`analysis_from_label`).

    Returns
    -------
    list of AnalysisStyle
        The analysis' style with ``label`` replaced; a second posterior of the same analysis
        takes a darker shade of its colour and another line style; posteriors of no known
        analysis take the remaining colours in turn.

    Raises
    ------
    InputError
        If ``analyses`` has another length than ``labels`` or names an unknown analysis.
    """
    labels = [str(label) for label in labels]
    if analyses is None:
        names = [analysis_from_label(label) for label in labels]
    else:
        if isinstance(analyses, str) or len(analyses) != len(labels):
            raise InputError(f"analyses must be a list with one name per posterior "
                             f"({len(labels)}); got {analyses!r}")  # fmt: skip
        names = [None if a is None else analysis_style(a).name for a in analyses]
    styles: list[AnalysisStyle] = []
    seen: dict[str, int] = {}
    n_other = 0
    for label, name in zip(labels, names, strict=True):
        if name is None:
            colour, ls = _FALLBACK[n_other % len(_FALLBACK)]
            styles.append(AnalysisStyle(f"other{n_other}", colour, ls, "D", label))
            n_other += 1
            continue
        style = STYLES[name]
        repeat = seen.get(name, 0)
        seen[name] = repeat + 1
        if repeat:  # a darker shade of the analysis' colour, and another line style
            style = dataclasses.replace(
                style,
                ls=_REPEAT_LS[(repeat - 1) % len(_REPEAT_LS)],
                colour=_shade(style.colour, 0.55**repeat),
            )
        styles.append(dataclasses.replace(style, label=label))
    return styles


def _shade(colour: str, factor: float) -> str:
    """A hex colour darkened towards black by ``factor`` (1: unchanged)."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c * factor):02X}" for c in rgb)
