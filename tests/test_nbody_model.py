"""The shipped N-body diffusion model (models/nbody64) applies the likelihood
temperature its card records, fitted on validation-split maps (docs/nbody.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import diffinfer as di
from diffinfer.diffusion import load_model
from diffinfer.inference.mc_control import MonteCarloWarning

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "nbody64"


def test_the_nbody_model_is_tempered_by_its_held_out_temperature() -> None:
    model = load_model("nbody64")
    (entry,) = model.card["calibration"]
    assert entry["n_maps"] >= 100 and entry["temperature"] > 1
    info = json.loads((EXAMPLES / "examples.json").read_text())["map1.npy"]["theta"]
    truth = np.array([info["Omega_m"], info["sigma_8"]])
    rho = np.load(EXAMPLES / "map1.npy")
    # the first 8 timesteps only (max_timesteps=8): this is about the temperature, and the
    # Monte Carlo refinement would double the cost (docs/posterior.md tests it)
    with pytest.warns(MonteCarloWarning):
        tempered = di.posterior(rho, model=model, seed=0, progress=False, max_timesteps=8)
        plain = di.posterior(
            rho, model=model, seed=0, progress=False, temperature=1.0, max_timesteps=8
        )
        g_t, g_p = tempered.grid(), plain.grid()
    assert tempered.info["temperature"] == pytest.approx(entry["temperature"])
    assert plain.info["temperature"] == 1.0
    # a Gaussian posterior tempered by tau widens by sqrt(tau) about the same mean
    ratio = np.sqrt(np.diag(g_t.cov()) / np.diag(g_p.cov()))
    np.testing.assert_allclose(ratio, np.sqrt(entry["temperature"]), rtol=0.25)
    sd = np.sqrt(np.diag(g_t.cov()))
    assert np.all(np.abs(g_t.mean() - g_p.mean()) < sd)
    assert np.all(np.abs(g_t.mean() - truth) < 3.5 * sd)
