"""Headline numbers of README and docs/ against the committed artefacts they come from.

Each entry is (document, sentence with ``{}`` where the numbers go, the numbers computed
from committed JSON, their formats). The test renders the sentence from the artefacts and
looks for it in the document (whitespace-normalised): a number edited in the text, or an
artefact recomputed without updating the text, fails it. The formats are the tolerance: a
value must round to what the document prints.

No document may refer to files outside the repository either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@cache
def _json(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def _diffusion(study: str) -> dict:
    return _json(f"calibration/{study}/report.json")["analyses"]["diffusion"]


def _z(study: str, param: str, key: str = "std") -> float:
    return _diffusion(study)["z_score"][param][key]


def _high_k_excess() -> tuple[float, float, float, float]:
    """Emulated / simulated P(k) - 1 in the bins k > 1.4 h/Mpc of the N-body emulator
    check, smallest and largest over its cosmologies, with the range of their errors."""
    ratios, errors = [], []
    for c in _json("docs/results/nbody_emulator.json")["cosmologies"]:
        k = np.asarray(c["k"])
        ratios += list(np.asarray(c["power_ratio"])[k > 1.4])
        errors += list(np.asarray(c["power_ratio_se"])[k > 1.4])
    return 100 * (min(ratios) - 1), 100 * (max(ratios) - 1), 100 * min(errors), 100 * max(errors)


def _zmean(study: str, param: str) -> str:
    """A z-score mean with its standard error, as the report tables print it (+0.02±0.07)."""
    z = _diffusion(study)["z_score"][param]
    return f"{z['mean']:+.2f}±{z['mean_se']:.2f}"


def _table_row(study: str) -> tuple[float, str, str]:
    """HPD deviation, z means and z spreads as docs/nbody.md's study tables print them."""
    d = _diffusion(study)
    means = " / ".join(_zmean(study, p) for p in ("Omega_m", "sigma_8"))
    spreads = " / ".join(f"{_z(study, p):.2f}±{_z(study, p, 'std_se'):.2f}"
                         for p in ("Omega_m", "sigma_8"))  # fmt: skip
    return d["hpd_coverage"]["max_deviation"], f"{means} | {spreads}", d["verdict"]


def _mc_row(stage: str, tag: str = "corner") -> tuple:
    """A row of docs/posterior.md's Monte Carlo error table, from its summary."""
    s = _json("docs/data/mc_error/summary.json")[tag][stage]
    (m0, m1), (e0, e1) = s["shift_mean"], s["shift_se"]
    calls = s["network_calls_median"], s["network_calls_max"]
    return (s["n_maps"], m0, e0, m1, e1, *s["abs_shift_mean"], max(s["abs_shift_se"]),
            s["maps_shift_above_1"], s["maps_shift_above_1_unwarned"],
            *((s["maps_warned_or_over_tolerance"], s["maps_refined_on_grid"])
              if stage == "final" else ("—", "—")),
            *s["estimated_error_rms"], *calls)  # fmt: skip


MC_ROW = ("| {} | {} ± {} | {} ± {} | {} / {} (± {}) | {} ({}) | {} | {} | {} / {} | {} ({}) |",
          ("d", "+.2f", ".2f", "+.2f", ".2f", ".2f", ".2f", ".2f", "d", "d", "", "", ".2f",
           ".2f", ",.0f", ",.0f"))  # fmt: skip


def _pm(x: float, se: float) -> str:
    """+0.01 ± 0.08 with a typographic minus, as the prose of docs/ writes it."""
    return f"{x:+.2f}".replace("-", "\u2212") + f" ± {se:.2f}"


def _fit_vs_grid() -> tuple[str, ...]:
    s = _json("docs/data/mc_error/direct/summary.json")
    return tuple(_pm(s[key]["mean"][j], s[key]["se"][j])
                 for key in ("direct_shift", "fitted_shift", "fitted_minus_direct")
                 for j in (0, 1))  # fmt: skip


def _by_seed() -> tuple[str, ...]:
    s = _json("docs/data/mc_error/summary.json")["corner-fits"]["final_by_seed"]
    return tuple(_pm(s[key]["mean"][j], s[key]["se"][j])
                 for key in ("seed0", "seed1", "seed1_minus_seed0") for j in (0, 1))  # fmt: skip


def _grid_across_prior() -> tuple:
    s = _json("docs/data/mc_error/summary.json")
    grid, fit = s["all-grid"]["final"], s["all-fits"]["final"]
    calls = [run[key] for key in ("network_calls_median", "network_calls_max")
             for run in (grid, fit)]  # fmt: skip
    return (*grid["abs_shift_mean"], *fit["abs_shift_mean"], *calls)


def _fit_residual() -> tuple:
    r = _json("docs/data/mc_error/direct/summary.json")["fit_residual"]
    prior = _json("docs/data/mc_error/summary.json")["all-fits"]["final"]
    return (r["spearman_vs_omega_m_bias"], r["maps_above_0.3"], r["omega_m_bias_above_0.3"],
            20 - r["maps_above_0.3"], r["omega_m_bias_below_0.3"],
            prior["maps_lack_of_fit_above_0.3"], prior["n_maps"])  # fmt: skip


def _scatter_row(tag: str) -> tuple:
    """A row of docs/posterior.md's estimate-against-scatter table (final stage)."""
    s = _json("docs/data/mc_error/summary.json")[tag]["final"]
    (r0, r1), (e0, e1) = s["ratio_estimate_to_scatter"], s["ratio_se"]
    return (s["seed_scatter_maps"], *s["seed_scatter_rms"], *s["estimated_error_rms_same_maps"],
            r0, e0, r1, e1)  # fmt: skip


def _seed_independent() -> tuple:
    s = _json("docs/data/mc_error/summary.json")["corner"]["seed_independent_shift"]
    (a0, a1), (e0, e1) = s["abs_seed_mean_shift_mean"], s["abs_seed_mean_shift_se"]
    return (*s["seed_independent_rms"], *s["monte_carlo_rms"], a0, e0, a1, e1)


def _oracle_floor() -> tuple:
    s = _json("docs/data/mc_error/oracle-floor-summary.json")
    o = s["oracle_full_bound_seed_mean_shift"]
    return (_pm(o["mean"][0], o["se"][0]), _pm(o["mean"][1], o["se"][1]), *o["rms"],
            *s["oracle_seed1_minus_seed0_rms"], *s["network_minus_oracle"]["rms"])  # fmt: skip


def _proposal_gains() -> tuple:
    s = _json("docs/data/mc_error/proposal_check.json")
    return tuple(s[m][kind]["gain"] for kind in ("control_variate", "plain")
                 for m in ("map000", "map010", "map028"))  # fmt: skip


def _against_exact(study: str, key: str, i: int) -> float:
    return _json(f"calibration/{study}/against_exact.json")[key][i]


def _cv_exact() -> dict:
    return _json("calibration/lognormal64-cv-test/against_exact.json")


def _card(model: str) -> dict:
    return _json(f"models/{model}/card.json")


Entry = tuple[str, str, Callable[[], tuple], tuple[str, ...]]


def _cost_row(name: str, file: str = "docs/data/edge_cost.json") -> tuple:
    """A row of docs/performance.md's table of the edge and Monte Carlo round changes, from
    scripts/refine_cost.py's output: evaluations, maps over 150, network calls, maps over
    the tolerance, mean shift, mean abs shift, maps off by > 1 sd."""
    d = _json(file)[name]
    c, s = d["common"], d["shift_from_exact"]
    return (c["n_evaluations"]["median"], c["n_evaluations"]["mean"], c["n_evaluations"]["max"],
            c["maps_above_150_evaluations"], c["network_calls"]["median"],
            c["network_calls"]["mean"], c["network_calls"]["max"], c["mc_tolerance_not_met"],
            *(f"{v:.3f}".replace("-", "\u2212") for v in s["mean"]), *s["abs_mean"],
            s["maps_above_1"])  # fmt: skip


COST_ROW = (
    "{} / {} / {} | {} | {} / {} / {} | {} | {} / {} | {} / {} | {} |",
    (".0f", ".1f", ".0f", "d", ",.0f", ",.0f", ",.0f", "d", "", "", ".3f", ".3f", "d"),
)


def _long_run_row(step: int) -> tuple:
    """The held-out loss per band and its mean at ``step`` of the N-body run in progress,
    from its committed log."""
    lines = (ROOT / "checkpoints/nbody64-long/log.jsonl").read_text().splitlines()
    records = [json.loads(x)["validation"] for x in lines if '"validation"' in x]
    v = next(r for r in records if r["step"] == step)
    return (*(v["loss"][b] for b in ("1-9", "10-99", "100-299", "300-599", "600-1000")),
            v["loss_mean"])  # fmt: skip


ENTRIES: list[Entry] = [
    ("README.md", "`lognormal64`: `{}` (calibration/lognormal64-cv-test, {} maps): the σ_8 "
     "z-scores spread {} ± {} (1 if calibrated)",
     lambda: (_diffusion("lognormal64-cv-test")["verdict"],
              _diffusion("lognormal64-cv-test")["n_maps"],
              _z("lognormal64-cv-test", "sigma_8"), _z("lognormal64-cv-test", "sigma_8", "std_se")),
     ("", "d", ".2f", ".2f")),
    ("README.md", "`nbody64` at τ = {}: `{}` (calibration/nbody64-tempered-test, {} maps): z "
     "spreads {} / {} (± {}) for Ω_m / σ_8 and an HPD curve {} off the diagonal",
     lambda: (next(v["temperature"] for v in _card("nbody64")["verdicts"]
                   if v["study"] == "calibration/nbody64-tempered-test"),
              _diffusion("nbody64-tempered-test")["verdict"],
              _diffusion("nbody64-tempered-test")["n_maps"],
              _z("nbody64-tempered-test", "Omega_m"), _z("nbody64-tempered-test", "sigma_8"),
              _z("nbody64-tempered-test", "sigma_8", "std_se"),
              _diffusion("nbody64-tempered-test")["hpd_coverage"]["max_deviation"]),
     (".2f", "", "d", ".2f", ".2f", ".2f", ".3f")),
    ("README.md", "posteriors differ from the exact ones by a mean |shift| of {} / {} σ",
     lambda: (_against_exact("lognormal64-cv-test", "mean_abs_shift", 0),
              _against_exact("lognormal64-cv-test", "mean_abs_shift", 1)),
     (".2f", ".2f")),
    ("README.md", "The same study finds the σ_8 z-scores {} ± {} wide",
     lambda: (_z("lognormal64-cv-test", "sigma_8"), _z("lognormal64-cv-test", "sigma_8", "std_se")),
     (".2f", ".2f")),
    ("docs/results.md", "| mean \\|shift\\| Ω_m / σ_8 | {} / {} |",
     lambda: (_against_exact("lognormal64-fast-test", "mean_abs_shift", 0),
              _against_exact("lognormal64-fast-test", "mean_abs_shift", 1)),
     (".2f", ".2f")),
    ("docs/results.md", "HPD maximum deviation {}, C2ST median {}",
     lambda: (_cv_exact()["hpd_curve"]["max_deviation"], _cv_exact()["c2st"]["median"]),
     (".3f", ".3f")),
    ("docs/nbody.md", "too high at every tested cosmology: {}–{} % (± {}–{} %) at k = 1.42–1.57",
     _high_k_excess, (".0f", ".0f", ".0f", ".0f")),
    ("docs/nbody.md", "| diffusion | 320 | yes ({}) | yes | no, no | {} | {} |",
     lambda: _table_row("nbody64-tempered-test"), (".3f", "", "")),
    ("docs/nbody.md", "| diffusion | 200 | no ({}) | no | no, no | {} | {} |",
     lambda: _table_row("nbody64-test"), (".3f", "", "")),
    ("docs/calibration.md", "`miscalibrated` by `calibration/lognormal64-cv-test` ({} maps; σ_8 "
     "z-score spread {} ±",
     lambda: (_diffusion("lognormal64-cv-test")["n_maps"], _z("lognormal64-cv-test", "sigma_8")),
     ("d", ".2f")),
    ("docs/posterior.md", "| corner (Ω_m < 0.2) | final (default) " + MC_ROW[0],
     lambda: _mc_row("final"), MC_ROW[1]),
    ("docs/posterior.md", "| corner (Ω_m < 0.2) | first (former default) " + MC_ROW[0],
     lambda: _mc_row("first"), MC_ROW[1]),
    ("docs/posterior.md", "| corner (Ω_m < 0.2) | final, fits kept " + MC_ROW[0],
     lambda: _mc_row("final", "corner-fits"), MC_ROW[1]),
    ("docs/posterior.md", "| all | first (former default) " + MC_ROW[0],
     lambda: _mc_row("first", "all"), MC_ROW[1]),
    ("docs/posterior.md", "| all | final (default) " + MC_ROW[0],
     lambda: _mc_row("final", "all"), MC_ROW[1]),
    ("docs/posterior.md", "| all | final, fits kept " + MC_ROW[0],
     lambda: _mc_row("final", "all-fits"), MC_ROW[1]),
    ("docs/posterior.md", "every grid point (no fits; up to 128 timesteps) are shifted by {} / {} "
     "σ from the exact posterior, against {} / {} σ with the fits: the fits move the corner "
     "posteriors by {} / {} σ (paired)", _fit_vs_grid, ("",) * 6),
    ("docs/posterior.md", "the refined posteriors are shifted alike: {} / {} σ with seed 0 and "
     "{} / {} σ with seed 1 (difference {} / {} σ)", _by_seed, ("",) * 6),
    ("docs/posterior.md", "as the fits (mean |shift| {} / {} σ against {} / {} σ, no map beyond "
     "1 σ, one warning) at a median of {} network calls per posterior against {} (max {} "
     "against {})",
     _grid_across_prior, (".2f",) * 4 + (",.0f",) * 4),
    ("docs/posterior.md", "has a rank correlation of {} with the Ω_m bias on the 20 corner maps; "
     "above 0.3 nats ({} maps) the fits are biased by {} σ on average, below it ({} maps) by "
     "{} σ, and across the prior {} of the {} maps exceed it", _fit_residual,
     (".2f", "d", "+.2f", "d", "+.2f", "d", "d")),
    ("docs/posterior.md", "predict the bias (rank correlation {} with the fits' Ω_m bias on {} "
     "corner maps, where {} exceed 0.3 nats",
     lambda: (lambda c: (f"{c['spearman']:+.2f}".replace("-", "\u2212"), c["n_maps"],
                         c["maps_above"]["0.3"]))(
         _json("docs/data/mc_error/first-fit/summary.json")["corner"]),
     ("", "d", "d")),
    ("docs/posterior.md", "The cost is {} network calls per posterior (median; max 23,600; 101 s) "
     "against {} for the fitted path on the same maps",
     lambda: tuple(_json("docs/data/mc_error/direct/summary.json")["network_calls_median"][k]
                   for k in ("direct", "fitted")), (",.0f", ",.0f")),
    ("docs/posterior.md", "| all + corner, pooled | 8 timesteps | {} × 2 to 4 | {} / {} | {} / {} "
     "| {} ± {} / {} ± {} |",
     lambda: (lambda s: (s["seed_scatter_maps"], *s["seed_scatter_rms"],
                         *s["estimated_error_rms_same_maps"], s["ratio_estimate_to_scatter"][0],
                         s["ratio_se"][0], s["ratio_estimate_to_scatter"][1], s["ratio_se"][1]))(
         _json("docs/data/mc_error/summary.json")["pooled_first_stage"]),
     ("d",) + (".3f",) * 4 + (".2f",) * 4),
    ("docs/posterior.md", "| corner | final (default) | {} × 3 | {} / {} | {} / {} | {} ± {} / "
     "{} ± {} |", lambda: _scatter_row("corner"), ("d",) + (".3f",) * 4 + (".2f",) * 4),
    ("docs/posterior.md", "| corner-picked | final (default) | {} × 3 | {} / {} | {} / {} | {} ± "
     "{} / {} ± {} |", lambda: _scatter_row("corner-picked"), ("d",) + (".3f",) * 4 + (".2f",) * 4),
    ("docs/posterior.md", "has an rms of {} / {} σ with the seeds' own scatter removed, against a "
     "Monte Carlo error of {} / {} σ rms; its mean |·| is {} ± {} / {} ± {} σ",
     _seed_independent, (".2f",) * 8),
    ("docs/posterior.md", "is shifted by {} / {} σ on average (rms {} / {}, most of it its own "
     "noise of one draw per term: its two seeds differ by {} / {} σ rms), so the bound and the "
     "grid add about 0.1 σ in Ω_m. The rest, rms {} / {} σ per map", _oracle_floor,
     ("", "") + (".2f",) * 6),
    ("docs/posterior.md", "variance per timestep of the control-variate estimate by {}×, {}× and "
     "{}× on maps 0, 10 and 28 against the card's ({}×, {}×, {}× for the plain terms",
     _proposal_gains, (".2f",) * 6),
    ("docs/performance.md", "| before (`calibration/lognormal64-refine`) | " + COST_ROW[0],
     lambda: _cost_row("refined"), COST_ROW[1]),
    ("docs/performance.md", "| the four changes (`calibration/lognormal64-refine-edge`) | "
     + COST_ROW[0], lambda: _cost_row("edge"), COST_ROW[1]),
    ("docs/performance.md", "| **now (default)**: and the cheaper direct rounds (below; "
     "`calibration/lognormal64-fresh-rounds`) | " + COST_ROW[0],
     lambda: _cost_row("fresh", "docs/data/fresh_rounds_cost.json"), COST_ROW[1]),
    ("docs/performance.md", "the largest number of calls on any map falls from {} to {} and "
     "the mean from {} to {}; the median stays at {}",
     lambda: (*(_json("docs/data/fresh_rounds_cost.json")[k]["common"]["network_calls"]["max"]
                for k in ("edge", "fresh")),
              *(_json("docs/data/fresh_rounds_cost.json")[k]["common"]["network_calls"]["mean"]
                for k in ("edge", "fresh")),
              _json("docs/data/fresh_rounds_cost.json")["fresh"]["common"]["network_calls"][
                  "median"]), (",.0f",) * 5),
    ("docs/performance.md", "The posterior means move by {} / {} exact σ rms (at most {} / {}) "
     "from the table's previous row",
     lambda: (*_json("docs/data/fresh_rounds_cost.json")["fresh_minus_edge"]["rms"],
              *_json("docs/data/fresh_rounds_cost.json")["fresh_minus_edge"]["max_abs"]),
     (".3f",) * 4),
    ("docs/performance.md", "With the four changes the posterior means move by {} / {} exact "
     "σ rms (at most {} / {})",
     lambda: (*_json("docs/data/edge_cost.json")["edge_minus_refined"]["rms"],
              *_json("docs/data/edge_cost.json")["edge_minus_refined"]["max_abs"]),
     (".3f",) * 4),
    *(("docs/nbody.md", f"| {step:,} | {{}} | {{}} | {{}} | {{}} | {{}} | {{}} |",
        lambda step=step: _long_run_row(step), (".4f",) * 6)
      for step in (1000, 3000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000)),
]  # fmt: skip


def _normalised(path: str) -> str:
    return " ".join((ROOT / path).read_text().split())


@pytest.mark.parametrize(("doc", "sentence", "values", "formats"), ENTRIES,
                         ids=[f"{e[0]}:{e[1][:30]}" for e in ENTRIES])  # fmt: skip
def test_a_headline_number_matches_its_artefact(doc, sentence, values, formats) -> None:
    rendered = sentence.format(*(format(v, f) for v, f in zip(values(), formats, strict=True)))
    assert rendered in _normalised(doc), f"{doc} should read: {rendered!r}"


def test_the_card_verdicts_are_the_reports() -> None:
    """The verdicts a model card records (and a posterior warns with) are those of the
    reports of the studies they name."""
    for model in ("lognormal64", "nbody64"):
        for entry in _card(model).get("verdicts", []):
            report = _json(f"{entry['study']}/report.json")["analyses"]["diffusion"]
            assert entry["verdict"] == report["verdict"], (model, entry["study"])
            assert entry["n_maps"] == report["n_maps"], (model, entry["study"])


def test_no_document_refers_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|shared/measurements|/work/|measurements\.md")
    files = [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "scripts").glob("*.py"),
        *(ROOT / "calibration").glob("*.py"),
        *(ROOT / "diffinfer").rglob("*.py"),
    ]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if outside.search(line)]  # fmt: skip
    assert not found, found


def _script_table(script: str, out: str) -> list[str]:
    """The markdown table lines a script prints with ``--table --out OUT``."""
    import subprocess
    import sys

    printed = subprocess.run([sys.executable, script, "--table", "--out", out], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
    return [line for line in printed.splitlines() if line.startswith("|")]


def test_the_scale_cut_tables_are_the_scripts() -> None:
    """docs/nbody.md's scale-cut tables (the example maps, and the information-calibration
    curve on validation maps) are what their scripts print from the committed data."""
    doc = (ROOT / "docs/nbody.md").read_text()
    examples = _script_table("scripts/scale_cut_examples.py", "docs/data/scale_cut_examples.json")
    curve = _script_table("scripts/scale_cut_curve.py", "docs/data/scale_cut_curve")
    # two headers and rules, 15 cuts and 3 power rows, 15 reweighted cuts; header, rule,
    # 5 cuts and P(k)
    assert (len(examples), len(curve)) == (37, 8)
    for line in examples + curve:
        assert line in doc, line


def _reference_row(comparison: str, analysis: str) -> str:
    """The coverage cells of a reference's row in docs/nbody.md's fresh-box tables."""
    c = _json(comparison)["coverage"][analysis]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    zm = " / ".join(_pm(*v) for v in c["z_mean"].values())
    zs = " / ".join(f"{v[0]:.2f} ± {v[1]:.2f}" for v in c["z_std"].values())
    ranks = " / ".join(yes(v) for v in c["ranks_in_band_99"].values())
    return (f"| {c['hpd_max_deviation']:.3f} ({yes(c['hpd_in_band_99'])}) | "
            f"{yes(c['tarp_in_band_99'])} | {ranks} | {zm} | {zs} |")  # fmt: skip


def test_the_reference_tables_are_the_studies() -> None:
    """The rows of docs/nbody.md's tables of references on held-out and fresh boxes, and the
    ensemble's area, against the committed comparisons."""
    text = " ".join((ROOT / "docs/nbody.md").read_text().replace("**", "").split())
    fresh = "calibration/nbody64-references-fresh/comparison{}.json"
    ens = "calibration/nbody64-npe-power-ensemble-fresh/comparison{}.json"
    held = "calibration/{}-validation/comparison-held-out.json"
    cnn = "calibration/nbody64-npe-ensemble-fresh/comparison{}.json"  # its first two members
    cnn4 = "calibration/nbody64-npe-ensemble4-fresh/comparison{}.json"  # the four shipped
    rows = [(held.format("nbody64-npe-power-member0"), "npe-power"),
            (held.format("nbody64-npe-power-ensemble"), "npe-power"),
            (held.format("nbody64-npe-member0"), "npe"),
            (held.format("nbody64-npe-ensemble"), "npe"),
            (held.format("nbody64-npe-ensemble4"), "npe")]  # fmt: skip
    for which in ("", "-fresh-1000"):  # the 400 fresh boxes, and the 1,000
        rows += [(fresh.format(which), a) for a in ("npe", "npe-power", "power")]
        rows += [(ens.format(which), "npe-power"), (cnn.format(which), "npe"),
                 (cnn4.format(which), "npe")]  # fmt: skip
    for path, analysis in rows:
        row = _reference_row(path, analysis)
        assert row in text, (path, analysis, row)
    areas = [(ens.format(""), "npe-power"), (ens.format("-fresh-1000"), "npe-power"),
             (held.format("nbody64-npe-power-ensemble"), "npe-power"),
             (held.format("nbody64-npe-power-member0"), "npe-power"),
             (cnn.format(""), "npe"), (cnn.format("-fresh-1000"), "npe"),
             (held.format("nbody64-npe-ensemble"), "npe"),
             (held.format("nbody64-npe-member0"), "npe"),
             (cnn4.format(""), "npe"), (cnn4.format("-fresh-1000"), "npe"),
             (held.format("nbody64-npe-ensemble4"), "npe")]  # fmt: skip
    for path, analysis in areas:
        (gain,) = [g for g in _json(path)["information_gain"] if g["reference"] == "power"]
        e = gain[analysis]
        lo, hi = e["area_ratio_interval_1se"]
        cell = f"{e['area_ratio_geometric_mean']:.3f} ({lo:.3f}–{hi:.3f})"
        assert cell in text, (path, cell)
    card = _json("models/nbody64-npe-power-ensemble/card.json")["coverage"]
    assert card["study"] == "calibration/nbody64-npe-power-ensemble-fresh"
    assert card["pooled"] == ["calibration/nbody64-npe-power-ensemble-fresh2"]
    pooled = _json(ens.format("-fresh-1000"))["coverage"]["npe-power"]
    assert card["n_maps"] == pooled["n_maps"] == 1000
    assert card["hpd_max_deviation"] == pooled["hpd_max_deviation"]
    card = _json("models/nbody64-npe-ensemble/card.json")["coverage"]
    assert card["study"] == "calibration/nbody64-npe-ensemble4-fresh"
    assert card["pooled"] == ["calibration/nbody64-npe-ensemble4-fresh2"]
    pooled = _json(cnn4.format("-fresh-1000"))["coverage"]["npe"]
    assert card["n_maps"] == pooled["n_maps"] == 1000
    assert card["verdict"] == pooled["verdict"] == "calibrated"
    assert _json(cnn.format("-fresh-1000"))["coverage"]["npe"]["verdict"] == "miscalibrated"
    pooled = _json(cnn.format("-fresh-1000"))["coverage"]["npe"]
    q = [f"{e['z_mean']:+.2f} ± {e['z_mean_se']:.2f}".replace("-", "\u2212")
         for e in pooled["z_by_posterior_mean_quartile"]["Omega_m"]]  # fmt: skip
    assert f"{q[0]} in the lowest quartile" in text, q


def _holdout_row(tag: str) -> str:
    """A row's cells of docs/nbody.md's table of flows chosen on held-out boxes."""
    d = _json(f"docs/data/npe_holdout/{tag}.json")
    zm = " / ".join(_pm(m, se) for m, se in zip(d["z_mean"], d["z_mean_se"], strict=True))
    zs = " / ".join(f"{v:.2f} ± {se:.2f}" for v, se in zip(d["z_std"], d["z_std_se"],
                                                            strict=True))  # fmt: skip
    band = "yes" if d["hpd_inside_band_99"] else "no"
    return (f"| {d['hpd_max_deviation']:.3f} ({band}) | "
            f"{d['hpd_signed_area']:+.3f} |".replace("-", "\u2212")
            + f" {zm} | {zs} | {1e3 * d['area_geometric_mean']:.3f} |")  # fmt: skip


def test_the_compressed_reference_tables_are_the_studies() -> None:
    """docs/nbody.md's section on NPE on the diffusion compression: the held-out choice of
    the flow, the first version's test and the test on the boxes simulated for it, and the
    card's recorded coverage, against the committed artefacts."""
    text = " ".join((ROOT / "docs/nbody.md").read_text().replace("**", "").split())
    for tag in ("baseline", "small", "batch256", "members8", "maf"):
        assert _holdout_row(tag) in text, (tag, _holdout_row(tag))
    for tag, n in (("maf-train2-test3", "2 maps per box (1,200 maps)"),
                   ("maf-train3-test3", "3 maps per box (1,800 maps)")):  # fmt: skip
        assert f"| {n} {_holdout_row(tag)}" in text, (tag, _holdout_row(tag))
    for final, label in (("fresh3", "400 fresh3"), ("fresh4", "1000 fresh4")):
        final = f"calibration/nbody64-npe-diffusion-{final}/comparison.json"
        for analysis in ("npe-diffusion", "npe", "power"):
            assert f"| {label} " + _reference_row(final, analysis) in text, (final, analysis)
        gains = {g["reference"]: g["npe-diffusion"] for g in _json(final)["information_gain"]}
        for ref in ("power", "npe"):
            e = gains[ref]
            lo, hi = e["area_ratio_interval_1se"]
            assert f"{e['area_ratio_geometric_mean']:.3f} ({lo:.3f}–{hi:.3f})" in text, ref
            lo, hi = e["z_corrected_area_ratio_interval_1se"]
            assert f"{e['z_corrected_area_ratio']:.3f} ({lo:.3f}–{hi:.3f})" in text, ref
    # the lean towards the prior's centre that TARP sees on 1,000 boxes
    coverage = _json("calibration/nbody64-npe-diffusion-fresh4/comparison.json")["coverage"]
    for analysis in ("npe-diffusion", "npe"):
        cells = " | ".join(", ".join(_pm(q["z_mean"], q["z_mean_se"]) for q in quartiles)
                           for quartiles in coverage[analysis]["z_by_posterior_mean_quartile"]
                           .values())  # fmt: skip
        assert cells in text, (analysis, cells)
    assert coverage["npe-diffusion"]["verdict"] == "miscalibrated"
    assert f"TARP curve is {coverage['npe-diffusion']['tarp_max_deviation']:.3f} off" in text
    chance = {r["n_maps"]: r for r in _json("docs/data/hpd_chance.json")["rows"]}
    for n, words in ((400, "in 21 % of studies of 400 maps"),
                     (1000, "in 0.9 % of studies of 1,000")):  # fmt: skip
        assert words.startswith(f"in {100 * chance[n]['p_above_target']:.{0 if n == 400 else 1}f}")
        assert words in text
    first = _json("calibration/nbody64-npe-diffusion-fresh/comparison.json")
    c = first["coverage"]["npe-diffusion"]
    assert f"an HPD curve {c['hpd_max_deviation']:.3f} below the diagonal" in text
    assert not c["hpd_in_band_99"]
    gains = {g["reference"]: g["npe-diffusion"] for g in first["information_gain"]}
    for ref in ("power", "npe"):
        lo, hi = gains[ref]["area_ratio_interval_1se"]
        assert f"{gains[ref]['area_ratio_geometric_mean']:.3f} ({lo:.3f}–{hi:.3f})" in text
    card = _json("models/nbody64-npe-diffusion-ensemble/card.json")["coverage"]
    assert card["study"] == "calibration/nbody64-npe-diffusion-fresh4"  # the latest test
    assert card["verdict"] == coverage["npe-diffusion"]["verdict"]


def test_the_long_run_emulator_table_is_its_check() -> None:
    """docs/nbody.md's emulator targets of the long N-body run against its committed check."""
    text = " ".join((ROOT / "docs/nbody.md").read_text().replace("**", "").split())
    t = _json("docs/results/nbody64_long_emulator.json")["targets"]
    assert not t["all_ok"]
    for c in t["cosmologies"]:
        cells = " | ".join(f"{b['ratio_mean']:.3f} ± {b['ratio_mean_se']:.3f}: {b['status']}"
                           for b in c["power"].values())  # fmt: skip
        row = f"| ({c['theta'][0]}, {c['theta'][1]}) | {cells} | {c['lnrho_mean_n_se']:.1f} |"
        assert row in text, row
    names = {"Omega_m": "Ωm", "sigma_8": "σ8"}
    for r in t["responses"]:
        row = (f"| {names[r['parameter']]} | {tuple(r['from'])} → {tuple(r['to'])} | "
               f"{r['ratio_mean']:.3f} ± {r['ratio_mean_se']:.3f} | {r['status']} |")  # fmt: skip
        assert row in text, row


def test_the_held_out_lean_table_is_the_check() -> None:
    """docs/nbody.md's held-out table of the lean towards the prior's centre, against
    scripts/npe_holdout.py's records."""
    text = " ".join((ROOT / "docs/nbody.md").read_text().replace("**", "").split())
    for tag in ("maf-train2-test3", "maf-1400boxes-test3", "maf-large-train2-test3",
                "maf-large-1400boxes-test3", "maf-mid-1400boxes-test3"):  # fmt: skip
        d = _json(f"docs/data/npe_holdout/{tag}.json")
        q = d["z_by_posterior_mean_quartile"]
        lean = " | ".join(", ".join(f"{x:+.2f}" for x in q[p]) for p in ("Omega_m", "sigma_8"))
        zs = " / ".join(f"{m:.2f} ± {se:.2f}" for m, se in zip(d["z_std"], d["z_std_se"],
                                                                 strict=True))  # fmt: skip
        row = (f"| {d['n_train_maps']:,} | {lean} | {d['tarp_max_deviation']:.3f} | "
               f"{d['hpd_max_deviation']:.3f} | {d['hpd_signed_area']:+.3f} | {zs} | "
               f"{1e3 * d['area_geometric_mean']:.3f} |").replace("-", "\u2212")  # fmt: skip
        assert row in text, (tag, row)
