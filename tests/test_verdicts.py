"""A model's calibration verdicts: read from its studies, stored on its card, and warned about
when a posterior uses a setting that is not calibrated."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from diffinfer.calibration.verdicts import verdict_entry
from diffinfer.inference import verdicts
from diffinfer.inference.posterior import posterior
from diffinfer.inference.verdicts import CalibrationWarning, warn_if_uncalibrated


@pytest.fixture(autouse=True)
def fresh_process_memory():
    verdicts._WARNED.clear()
    yield
    verdicts._WARNED.clear()


def _density(sim):
    return sim.simulate(np.array([0.3, 0.8]), 1, seed=4)[0]


def test_nbody64_warns_that_it_is_not_calibrated_naming_the_study(sim):
    with pytest.warns(CalibrationWarning, match=r"nbody64-tempered-test, 320 maps.*z-score spread"):
        post = posterior(_density(sim), model="nbody64", progress=False)
    assert post.info["calibration"]["verdict"] == "miscalibrated"
    # once per process and setting
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        posterior(_density(sim), model="nbody64", progress=False)
    # a setting no study covers is unchecked, and says so
    with pytest.warns(CalibrationWarning, match="no calibration study of this setting"):
        posterior(_density(sim), model="nbody64", temperature=6.8, progress=False)


def test_the_card_holds_what_the_committed_studies_found():
    card = json.load(open("models/nbody64/card.json"))
    stored = {(e["likelihood"], round(e["temperature"], 3)): e for e in card["verdicts"]}
    fresh = verdict_entry("calibration/nbody64-tempered-test")
    assert stored[(fresh["likelihood"], round(fresh["temperature"], 3))] == fresh
    z = json.load(open("calibration/nbody64-tempered-test/report.json"))
    spread = z["analyses"]["diffusion"]["z_score"]["Omega_m"]["std"]
    assert any(f"{spread:.2f}" in f for f in fresh["failed"])


def test_a_calibrated_setting_is_quiet():
    card = {"name": "m", "verdicts": [{"study": "s", "likelihood": "L0", "n_noise": 1,
                                       "noise_sigma": 0.0, "temperature": 1.0,
                                       "verdict": "calibrated", "n_maps": 500,
                                       "failed": []}]}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_uncalibrated(card, "L0", 1, 0.0, 1.0)["verdict"] == "calibrated"
    with pytest.warns(CalibrationWarning, match="no calibration study"):
        warn_if_uncalibrated(card, "L0", 1, 0.0, 2.0)


def test_the_warning_names_the_calibrated_route_through_the_model(tmp_path, monkeypatch):
    """A miscalibrated model's warning points to NPE on its compression where that
    reference's card records a calibrated study; not where its study failed, and not for a
    model that is not its compressor."""
    from diffinfer.likelihoods import npe

    ref = json.load(open("models/nbody64-npe-diffusion-ensemble/card.json"))
    card = json.load(open("models/nbody64/card.json"))
    e = card["verdicts"][-1]
    for verdict in ("calibrated", "miscalibrated"):
        (tmp_path / verdict).mkdir()
        (tmp_path / verdict / "card.json").write_text(json.dumps(
            {**ref, "coverage": {**ref["coverage"], "verdict": verdict, "study": "S",
                                 "n_maps": 1000}}))  # fmt: skip
    monkeypatch.setitem(npe.DEFAULT_REFERENCES, "npe-diffusion", str(tmp_path / "calibrated"))
    with pytest.warns(
        CalibrationWarning,
        match=r"alternative: likelihood='npe-diffusion' "
        r"\(NPE on nbody64's.*\(S, 1000 maps",
    ):
        warn_if_uncalibrated(card, e["likelihood"], 1, 0.0, e["temperature"])
    with pytest.warns(CalibrationWarning) as got:
        warn_if_uncalibrated({**card, "name": "lognormal64"}, e["likelihood"], 1, 0.0, 1.0)
    assert "alternative" not in str(got[0].message)
    monkeypatch.setitem(npe.DEFAULT_REFERENCES, "npe-diffusion",
                        str(tmp_path / "miscalibrated"))  # fmt: skip
    verdicts._WARNED.clear()
    with pytest.warns(CalibrationWarning) as got:
        warn_if_uncalibrated(card, e["likelihood"], 1, 0.0, e["temperature"])
    assert "alternative" not in str(got[0].message)
