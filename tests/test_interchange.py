"""What other tools read: the derived S_8, GetDist chain files, ArviZ's log_likelihood group
and chains, emcee's convergence by R-hat and ESS, and checks on importance weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from diffinfer.errors import InputError
from diffinfer.inference.posterior import posterior
from diffinfer.inference.samples import Samples
from diffinfer.parameters import derived

TRUTH = np.array([0.3, 0.8])


@pytest.fixture(scope="module")
def density(sim) -> np.ndarray:
    return sim.simulate(TRUTH, 1, seed=4)[0]


@pytest.fixture(scope="module")
def grid_post(density):
    post = posterior(density, model=None, likelihood="exact", progress=False)
    return post, post.sample(4000)


def test_s8_is_derived_from_the_draws_and_summarised_on_the_grid(grid_post):
    post, samples = grid_post
    s8 = samples.derived("S_8")
    np.testing.assert_allclose(s8, samples.theta[..., 1] * np.sqrt(samples.theta[..., 0] / 0.3))
    from_draws, from_grid = samples.summary()["S_8"], post.summary()["S_8"]
    # 4000 independent draws: the mean agrees within a few standard errors of the grid's
    assert abs(from_draws["mean"] - from_grid["mean"]) < 4 * from_grid["std"] / np.sqrt(4000)
    assert from_draws["std"] == pytest.approx(from_grid["std"], rel=0.06)
    assert from_draws["q16"] < from_grid["median"] < from_draws["q84"]
    with pytest.raises(InputError, match=r"known.*S_8"):
        samples.derived("S8")
    with pytest.raises(InputError, match="unknown parameter"):
        derived("h", samples.theta)


def test_grid_draws_come_in_chains_that_arviz_reads_without_warnings(grid_post):
    import arviz as az

    _, samples = grid_post
    assert samples.theta.shape == (4, 1000, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idata = samples.to_arviz()
        rhat, ess = az.rhat(idata), az.ess(idata)
    # independent draws: R-hat within 1 +- 0.01 and ESS about the number of draws
    for name in ("Omega_m", "sigma_8", "S_8"):
        assert abs(float(rhat[name]) - 1) < 0.01
        assert float(ess[name]) > 2500
    ll = idata.log_likelihood["map"].values
    assert ll.shape == (4, 1000) and np.isfinite(ll).all()
    # the log likelihood is the exact one (flat prior: log posterior - log prior), up to
    # the cubic interpolation between grid cells
    flat = samples.flat[:50]
    exact = grid_post[0].log_prob(flat).numpy()
    lp = samples.stats["lp"].reshape(-1)[:50]
    np.testing.assert_allclose(lp - lp.mean(), exact - exact.mean(), atol=0.05)


def test_getdist_reads_the_saved_chain_files(grid_post, tmp_path):
    from getdist import loadMCSamples

    _, samples = grid_post
    root = samples.save(tmp_path / "chains" / "lognormal", format="getdist")
    assert sorted(p.name for p in root.parent.iterdir()) == [
        "lognormal.json", "lognormal.paramnames", "lognormal.ranges", "lognormal_1.txt",
        "lognormal_2.txt", "lognormal_3.txt", "lognormal_4.txt"]  # fmt: skip
    mc = loadMCSamples(str(root), settings={"ignore_rows": 0})
    assert mc.getParamNames().list() == ["Omega_m", "sigma_8", "S_8"]
    assert mc.getParamNames().parWithName("S_8").isDerived
    assert mc.numrows == len(samples)
    s = samples.summary()
    for name in ("Omega_m", "sigma_8", "S_8"):
        assert mc.mean(name) == pytest.approx(s[name]["mean"], rel=1e-8)
    # the prior box is GetDist's range (its kernel density estimate respects the edges)
    assert mc.ranges.getLower("Omega_m") == 0.1 and mc.ranges.getUpper("sigma_8") == 1.0
    np.testing.assert_allclose(mc.loglikes, -samples.stats["lp"].reshape(-1), rtol=1e-8)
    with pytest.raises(InputError, match="format"):
        samples.save(tmp_path / "x", format="cobaya")


def test_bad_weights_are_refused_naming_the_problem():
    theta = np.random.default_rng(0).uniform([0.1, 0.6], [0.5, 1.0], (10, 2))
    for weights, match in [(np.full(9, 1.0), "one value per draw"),
                           (np.r_[np.nan, np.ones(9)], "NaN"),
                           (np.r_[-1.0, np.ones(9)], "non-negative"),
                           (np.zeros(10), "all zero")]:  # fmt: skip
        with pytest.raises(InputError, match=match):
            Samples(theta, "grid", weights=weights)
    ok = Samples(theta, "grid", weights=np.arange(10.0))
    assert ok.weights.shape == (1, 10)
    mean = np.average(theta[:, 0], weights=np.arange(10.0))
    assert ok.summary()["Omega_m"]["mean"] == pytest.approx(mean)


def test_every_posterior_records_its_provenance(grid_post, density):
    import diffinfer
    from diffinfer.diffusion import DiffusionModel

    _, samples = grid_post
    prov = samples.info["provenance"]
    assert prov["diffinfer"] == diffinfer.__version__ and prov["torch"]
    assert prov["likelihood"] == "exact" and prov["model"] is None and prov["seed"] == 0
    assert prov["cpu"] and prov["device"] == "cpu"
    post = posterior(density, model=DiffusionModel.oracle(), n_timesteps=4, max_timesteps=4,
                     seed=3, progress=False)  # fmt: skip
    prov = post.info["provenance"]
    assert prov["model"]["name"] == "oracle"
    settings = prov["settings"]
    assert settings["n_timesteps"] == 4 and settings["likelihood_seed"] == 3
    assert settings["precision"] in ("fp32", "bf16") and settings["max_timesteps"] == 4


def test_saving_a_posterior_without_samples_names_the_call_that_makes_them(density, tmp_path):
    post = posterior(density, model=None, likelihood="exact", progress=False)
    with pytest.raises(InputError, match=r"no samples yet.*post.sample\(4000\)"):
        post.save(tmp_path / "chain", format="getdist")
    post.sample(400)
    root = post.save(tmp_path / "chain", format="getdist")
    assert (tmp_path / "chain_1.txt").is_file() and root.name == "chain"
