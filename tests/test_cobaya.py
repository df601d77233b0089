"""The cobaya external likelihood: cobaya's MCMC on one map reproduces diffinfer's posterior,
and combines with another likelihood."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cobaya")

from cobaya.run import run

from diffinfer.cobaya import MapLikelihood
from diffinfer.errors import InputError
from diffinfer.inference.posterior import posterior

PARAMS = {"Omega_m": {"prior": {"min": 0.1, "max": 0.5}, "ref": 0.3, "proposal": 0.01},
          "sigma_8": {"prior": {"min": 0.6, "max": 1.0}, "ref": 0.8, "proposal": 0.01}}  # fmt: skip


@pytest.fixture(scope="module")
def map_file(sim, tmp_path_factory):
    path = tmp_path_factory.mktemp("cobaya") / "map.npy"
    np.save(path, sim.simulate(np.array([0.3, 0.8]), 1, seed=4)[0])
    return path


def _mcmc(likelihoods: dict, seed: int = 1):
    info = {"likelihood": likelihoods, "params": PARAMS,
            "sampler": {"mcmc": {"max_samples": 3000, "Rminus1_stop": 0.02,
                                 "seed": seed}}}  # fmt: skip
    _, sampler = run(info)
    s = sampler.products()["sample"]
    w = s[s.weight_column] if hasattr(s, "weight_column") else s["weight"]
    theta = np.column_stack([s["Omega_m"], s["sigma_8"]])
    return theta, np.asarray(w, float)


def test_cobaya_mcmc_on_one_map_reproduces_the_posterior(map_file):
    entry = {"external": MapLikelihood, "map": str(map_file), "likelihood": "exact",
             "model": None}  # fmt: skip
    theta, w = _mcmc({"diffinfer": entry})
    ref = posterior(str(map_file), likelihood="exact", progress=False).summary()
    mean = np.average(theta, axis=0, weights=w)
    sd = np.sqrt(np.average((theta - mean) ** 2, axis=0, weights=w))
    for j, name in enumerate(("Omega_m", "sigma_8")):
        # a short chain: within half a posterior sd, widths within 30 %
        assert abs(mean[j] - ref[name]["mean"]) < 0.5 * ref[name]["std"]
        assert sd[j] == pytest.approx(ref[name]["std"], rel=0.3)


def test_combined_with_another_probe_and_direct_evaluation(map_file):
    like = MapLikelihood({"map": str(map_file), "likelihood": "exact", "model": None,
                          "evaluate": "direct"})  # fmt: skip
    grid = MapLikelihood({"map": str(map_file), "likelihood": "exact", "model": None})
    at = grid.posterior.summary()
    theta = np.array([at["Omega_m"]["mean"], at["sigma_8"]["mean"]])
    near = theta + np.array([at["Omega_m"]["std"], -at["sigma_8"]["std"]])
    # the tabulated likelihood equals the direct one up to a constant and interpolation
    d = like.log_likelihood(near) - like.log_likelihood(theta)
    g = grid.log_likelihood(near) - grid.log_likelihood(theta)
    assert g == pytest.approx(d, abs=0.05)
    assert like.log_likelihood(np.array([0.05, 0.8])) == -np.inf

    def sigma8_probe(sigma_8):  # an external sigma_8 measurement, tighter than the map's
        return -0.5 * ((sigma_8 - 0.70) / 0.01) ** 2

    entry = {"external": MapLikelihood, "map": str(map_file), "likelihood": "exact",
             "model": None}  # fmt: skip
    combined, w = _mcmc({"diffinfer": entry, "probe": sigma8_probe})
    s8 = np.average(combined[:, 1], weights=w)
    assert 0.69 < s8 < at["sigma_8"]["mean"]  # pulled towards the probe
    with pytest.raises(InputError, match="needs `map:`"):
        MapLikelihood({"likelihood": "exact"})
