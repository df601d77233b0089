"""The scale cut ``t_min`` of the diffusion likelihood: the sum of the bound's terms at
t >= t_min (docs/likelihood.md, "Scale cuts")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffinfer as di
from diffinfer.diffusion import DiffusionModel
from diffinfer.errors import InputError
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.likelihoods.terms import term_weights
from diffinfer.simulators import LognormalSimulator
from tests.small_models import SMALL_FIELD, small_spectral_model

FIELD = SMALL_FIELD
THETA = np.array([[0.3, 0.8], [0.34, 0.77]])
T_MIN = 20


@pytest.fixture(scope="module")
def density() -> np.ndarray:
    return LognormalSimulator(FIELD).simulate(np.array([0.3, 0.8]), 1, seed=3)[0]


def test_the_full_bound_above_t_min_is_the_sum_of_those_terms(sim):
    """Every term from t_min (oracle, 64^2): the same timesteps, noise and values as the
    term list L_{t_min - 1} ... L_{T - 1}, a computation that knows nothing of the cut."""
    oracle = DiffusionModel.oracle(sim)
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=4)[0])
    theta = torch.tensor([[0.3, 0.8], [0.27, 0.83], [0.34, 0.76]])
    cut = DiffusionLikelihood(oracle, y, terms="vlb", n_timesteps=None, space="model", t_min=300)
    listed = DiffusionLikelihood(oracle, y, terms=list(range(299, 1000)), space="model")
    assert torch.equal(cut.plan.timesteps, torch.arange(300, 1001))
    torch.testing.assert_close(cut(theta), listed(theta), rtol=1e-12, atol=1e-8)
    full = DiffusionLikelihood(oracle, y, terms="vlb", n_timesteps=None, space="model")
    # the cut drops information: the band's differences are smaller than the whole bound's
    d_cut, d_full = (np.ptp(v(theta).numpy()) for v in (cut, full))
    assert d_cut < 0.8 * d_full


def test_the_control_variate_sums_its_closed_form_from_t_min(density):
    """With a network that is its Wiener filter alone the estimate is the closed form:
    -sum_{t >= t_min} w_t E||eps - eps_W||^2, whatever the seed."""
    model = small_spectral_model(0.0)
    y = model.to_model_space(density)
    unit = FIELD.prior.to_unit(torch.as_tensor(THETA, dtype=torch.float32))
    w = term_weights(model)
    closed = -(model.denoiser.spectral.expected_error(y, unit) * w)[:, T_MIN - 1 :].sum(dim=-1)
    for seed in (0, 1):
        like = DiffusionLikelihood(model, density, n_timesteps=4, seed=seed, t_min=T_MIN)
        assert like.control_variate
        torch.testing.assert_close(like(THETA), closed, rtol=1e-6, atol=1e-6)


def test_the_sampled_cut_is_unbiased_for_its_band(density):
    """Over 100 seeds, 4 importance-sampled timesteps from t_min estimate the band's log L
    difference with the mean of every term from t_min (30 seeds; plain estimator, within
    3.5 joint standard errors), and differ from the whole bound's."""
    model = small_spectral_model(0.05)

    def differences(seeds: range, **options) -> np.ndarray:
        return np.array([np.diff(DiffusionLikelihood(model, density, seed=s, control_variate=False,
                                                     **options)(THETA).numpy())[0]
                         for s in seeds])  # fmt: skip

    like = DiffusionLikelihood(model, density, n_timesteps=4, t_min=T_MIN, proposal="default")
    assert int(like.plan.timesteps.min()) >= T_MIN
    sampled = differences(range(100), n_timesteps=4, t_min=T_MIN, proposal="default")
    band = differences(range(30), n_timesteps=None, t_min=T_MIN)
    whole = differences(range(10), n_timesteps=None)
    se = np.sqrt(sampled.var(ddof=1) / len(sampled) + band.var(ddof=1) / len(band))
    assert abs(sampled.mean() - band.mean()) < 3.5 * se
    se_whole = np.sqrt(whole.var(ddof=1) / len(whole) + band.var(ddof=1) / len(band))
    assert abs(whole.mean() - band.mean()) > 5 * se_whole


def test_added_timesteps_stay_above_the_cut(density):
    like = DiffusionLikelihood(
        small_spectral_model(0.05), density, n_timesteps=4, seed=1, t_min=T_MIN
    )
    like(THETA)
    like.add_timesteps(8)
    assert len(like.plan.timesteps) == 12 and int(like.plan.timesteps.min()) >= T_MIN
    assert like.adaptive
    assert "scale cut t >= 20" in like.description


@pytest.mark.parametrize("t_min", [0, 51, 2.5, "30", True])
def test_a_cut_outside_the_schedule_is_refused(density, t_min):
    with pytest.raises(InputError, match="t_min"):
        DiffusionLikelihood(small_spectral_model(0.0), density, t_min=t_min)


@pytest.mark.parametrize("terms", ["l0", [0, 5, 30]])
def test_a_cut_applies_to_the_full_bound_only(density, terms):
    with pytest.raises(InputError, match="t_min applies to the full bound"):
        DiffusionLikelihood(small_spectral_model(0.0), density, terms=terms, t_min=10)


def test_the_cut_is_refused_by_the_references_and_checked_by_posterior(sim):
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=1)[0]
    with pytest.raises(InputError, match="t_min"):
        di.posterior(density, likelihood="exact", model=None, t_min=10)
    with pytest.raises(InputError, match="t_min"):
        di.posterior(density, model="oracle", t_min=0)


def test_a_temperature_fitted_for_the_whole_bound_is_not_applied_to_a_cut():
    """nbody64's card stores a temperature for its default likelihood; a cut likelihood is
    another term set (its description names the cut) and gets none."""
    model = di.load_model("nbody64")
    density = np.load("examples/nbody64/map0.npy")
    whole = di.posterior(density, model=model, progress=False)
    cut = di.posterior(density, model=model, progress=False, t_min=30)
    assert whole.info["temperature"] > 1
    assert cut.info["temperature"] == 1.0
    assert "scale cut t >= 30" in cut.info["terms"]


def test_the_pyro_distribution_takes_the_cut(density):
    """DiffusionField(t_min=...).log_prob is the cut likelihood's value."""
    from diffinfer.likelihoods.distributions import DiffusionField

    model = small_spectral_model(0.05)
    theta = torch.tensor(THETA[0])
    field = DiffusionField(theta, model, n_timesteps=4, seed=2, t_min=T_MIN)
    got = field.log_prob(torch.as_tensor(density))
    like = DiffusionLikelihood(model, density, n_timesteps=4, seed=2, t_min=T_MIN)
    torch.testing.assert_close(got.reshape(1), like(THETA[:1]), rtol=1e-6, atol=1e-6)
    whole = DiffusionField(theta, model, n_timesteps=4, seed=2).log_prob(torch.as_tensor(density))
    assert abs(float(whole) - float(got)) > 1.0


# --------------------------------------------------------- cutting a computed posterior
def _oracle_posterior(sim, seed: int, **options):
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=11)[0]
    return di.posterior(density, model="oracle", n_timesteps=128, max_timesteps=128, seed=seed,
                        progress=False, **options)  # fmt: skip


def test_scale_cut_at_one_is_the_posterior_itself(sim):
    post = _oracle_posterior(sim, 0)
    g, cut = post.grid(), post.scale_cut(1)
    np.testing.assert_allclose(cut.mean(), g.mean(), rtol=1e-10)
    np.testing.assert_allclose(cut.cov(), g.cov(), rtol=1e-8)
    assert cut.mc_error["n_timesteps"] == cut.mc_error["n_timesteps_total"] == 128


def test_scale_cut_agrees_with_the_cut_posterior_computed_afresh(sim):
    """Over 6 seeds, the cut at t >= 100 of the whole bound's posterior (its terms reweighted,
    no new evaluations) has the mean of the posterior computed with t_min=100 and its own
    timesteps (within 4 joint standard errors), is wider than the whole, and spends nothing."""
    cuts, fresh = [], []
    for seed in range(6):
        post = _oracle_posterior(sim, seed)
        whole = post.grid()
        spent = post.n_evaluations
        cut = post.scale_cut(100)
        assert post.n_evaluations == spent
        assert np.linalg.det(cut.cov()) > 1.2 * np.linalg.det(whole.cov())
        assert cut.mc_error["t_min"] == 100 and 0 < cut.mc_error["n_timesteps"] < 128
        f = _oracle_posterior(sim, 100 + seed, t_min=100).grid()
        sd = np.sqrt(np.diag(f.cov()))
        cuts.append(cut.mean() / sd)
        fresh.append(f.mean() / sd)
    cuts, fresh = np.array(cuts), np.array(fresh)
    se = np.sqrt(cuts.var(axis=0, ddof=1) / 6 + fresh.var(axis=0, ddof=1) / 6)
    assert np.all(np.abs(cuts.mean(axis=0) - fresh.mean(axis=0)) < 4 * se)


def test_scale_cut_warns_at_the_grid_edge_and_refuses_what_it_cannot_cut(sim):
    post = _oracle_posterior(sim, 0)
    with pytest.warns(UserWarning, match="outer ring"):
        post.scale_cut(400)
    for t_min, match in ((0, "t_min must be"), (1001, "t_min must be"), (1000, "none of the")):
        with pytest.raises(InputError, match=match):
            post.scale_cut(t_min)
    with pytest.raises(InputError, match="temperature must be"):
        post.scale_cut(30, temperature=0.0)
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=11)[0]
    with pytest.raises(InputError, match="scale_cut needs"):
        di.posterior(density, likelihood="exact", model=None, progress=False).scale_cut(30)
    cut_post = _oracle_posterior(sim, 0, t_min=50)
    with pytest.raises(InputError, match="t_min must be"):
        cut_post.scale_cut(10)  # below the likelihood's own cut
