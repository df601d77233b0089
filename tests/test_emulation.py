"""Spectral branch, sampling (DDPM/DDIM) checked against the oracle, and model directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from diffinfer.diffusion import (
    DiffusionModel,
    NoiseSchedule,
    SpectralBranch,
    UNet,
    UNetConfig,
    load_model,
    save_model,
)
from diffinfer.diffusion.oracle import sampler_variance_ratio
from diffinfer.errors import DataFileError, InputError, OutsidePriorError
from diffinfer.fields import FieldConfig
from diffinfer.fields.stats import bin_modes, default_bins
from diffinfer.simulators import LognormalSimulator
from diffinfer.store import CARD_FILE, WEIGHTS_FILE, seal_card

THETA = np.array([0.3, 0.8])


# ------------------------------------------------------------------ spectral branch
def test_spectral_branch_starts_as_the_white_noise_filter_and_commutes_with_any_shift():
    sched = NoiseSchedule(n_steps=100)
    branch = SpectralBranch(sched.alpha_bar)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 32, 32, generator=g)
    t = torch.tensor([1, 40, 100])
    u = torch.rand(3, 2, generator=g)
    out = branch(x, t, u)
    # log lambda = 0, mean = 0 at initialisation: E[eps | x_t] = sqrt(1 - a) x_t
    a = sched.alpha_bar[t].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, (1 - a).sqrt() * x, atol=1e-5, rtol=1e-5)
    # a Fourier filter commutes with every periodic shift, odd ones included
    with torch.no_grad():
        branch.mlp[-1].weight.normal_(generator=g)
    shifted = branch(torch.roll(x, (5, 3), dims=(-2, -1)), t, u)
    torch.testing.assert_close(shifted, torch.roll(branch(x, t, u), (5, 3), dims=(-2, -1)))
    assert branch(torch.randn(1, 1, 64, 64), t[:1], u[:1]).shape == (1, 1, 64, 64)


def test_spectral_branch_learns_the_oracle(tiny_sim):
    """Trained alone on log-normal maps at one theta, it reaches the oracle's epsilon-MSE."""
    sim = LognormalSimulator(FieldConfig(n_pix=16, box_size=125.0, depth=50.0))
    sched = NoiseSchedule(n_steps=100)
    oracle = DiffusionModel.oracle(sim, sched)
    torch.manual_seed(0)
    branch = SpectralBranch(sched.alpha_bar)
    opt = torch.optim.Adam(branch.parameters(), lr=3e-2)
    y = sim.transform.forward(sim.simulate(THETA, 512, seed=1)).float().unsqueeze(1)
    u = sim.config.prior.to_unit(torch.as_tensor(THETA)).float().expand(64, 2)
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        idx = torch.randint(0, 512, (64,), generator=g)
        t = torch.randint(1, 101, (64,), generator=g)
        noise = torch.randn(64, 1, 16, 16, generator=g)
        loss = (branch(sched.q_sample(y[idx], t, noise), t, u) - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = torch.full((512,), 20)
    noise = torch.randn(512, 1, 16, 16, generator=g)
    x_t = sched.q_sample(y, t, noise)
    with torch.no_grad():
        mse = (branch(x_t, t, u[:1].expand(512, 2)) - noise).pow(2).mean().item()
    best = oracle.denoiser.expected_mse(torch.tensor([20]), torch.as_tensor(THETA)).item()
    assert mse == pytest.approx(best, rel=0.03)


# ------------------------------------------------------------------------ sampling
def _binned_power(y: np.ndarray, n_pix: int, box: float) -> np.ndarray:
    """Binned |FFT|^2 / N^2 of model-space maps (the eigenvalue scale), per map."""
    p = np.abs(np.fft.fft2(y)) ** 2 / n_pix**2
    return bin_modes(p, box, default_bins(n_pix, box)).power


@pytest.mark.parametrize(("sampler", "steps", "n_maps"), [("ddpm", 1000, 32), ("ddim", 20, 32)])
def test_oracle_emulation_reproduces_the_spectrum_the_sampler_should(sim, sampler, steps, n_maps):
    """Emulated spectra against the closed-form prediction for this sampler (chi^2 test)."""
    model = DiffusionModel.oracle(sim)
    y = model.sample(THETA, n_maps, sampler=sampler, steps=steps, seed=3, density=False)
    power = _binned_power(y, 64, 500.0)
    _, lam = sim.model_moments(torch.as_tensor(THETA)[None])
    lam = lam[0].numpy()
    ratio = sampler_variance_ratio(lam, model.schedule, steps, sampler)
    edges = default_bins(64, 500.0)
    binned = bin_modes(lam * ratio, 500.0, edges)
    expected, n_modes = binned.power, binned.n_modes
    exact = bin_modes(lam, 500.0, edges).power
    # the binned power of one map is a mean of n_modes/2 independent chi^2_2 / 2 variables
    z = (power.mean(0) - expected) / (expected / np.sqrt(n_maps * n_modes / 2))
    p_value = stats.chi2.sf(np.sum(z**2), df=len(z))
    assert p_value > 1e-3, (z.round(2), p_value)
    if sampler == "ddpm":  # T = 1000 ancestral sampling: within 3.5 % of the true spectrum
        assert np.max(np.abs(expected / exact - 1)) < 0.035


def test_sampling_is_seeded_and_independent_of_batching(sim):
    model = DiffusionModel.oracle(sim, NoiseSchedule(n_steps=50))
    a = model.sample(np.array([[0.3, 0.8], [0.2, 0.7]]), 3, seed=5, batch_size=2)
    b = model.sample(np.array([[0.3, 0.8], [0.2, 0.7]]), 3, seed=5, batch_size=5)
    c = model.sample(np.array([0.2, 0.7]), 3, seed=5)
    assert a.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(a[0, 0], a[0, 1])
    d = model.sample(np.array([0.3, 0.8]), 3, seed=6)
    assert not np.allclose(a[0], d)
    assert c.shape == (3, 64, 64) and np.all(c > 0)


def test_ddim_error_grows_as_steps_fall():
    sched = NoiseSchedule()
    lam = np.array([0.05, 1.0, 50.0])
    errors = [
        np.abs(sampler_variance_ratio(lam, sched, s, "ddim") - 1).max() for s in (200, 50, 10)
    ]
    assert errors[0] < errors[1] < errors[2]


def test_sampling_bad_input(sim):
    model = DiffusionModel.oracle(sim, NoiseSchedule(n_steps=20))
    with pytest.raises(OutsidePriorError):
        model.sample(np.array([0.9, 0.8]))
    with pytest.raises(InputError, match="sampler"):
        model.sample(THETA, sampler="euler")
    with pytest.raises(InputError, match="steps"):
        model.sample(THETA, steps=50)


# ------------------------------------------------------------ model directories
def _tiny_model(spectral: bool = True) -> DiffusionModel:
    field = FieldConfig(n_pix=16, box_size=125.0, depth=50.0)
    sim = LognormalSimulator(field)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), embed_dim=16, groups=4,
                     spectral=spectral)  # fmt: skip
    torch.manual_seed(0)
    model = DiffusionModel.from_config(cfg, NoiseSchedule(n_steps=30), sim.transform, field)
    with torch.no_grad():  # move away from the zero-initialised output
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_model_directory_round_trip(tmp_path, monkeypatch):
    model = _tiny_model()
    path = save_model(model, tmp_path / "tiny", metrics={"validation": {"loss": 0.5}})
    card = json.loads((path / CARD_FILE).read_text())
    assert card["weights"]["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert card["field"]["n_pix"] == 16 and card["schedule"]["n_steps"] == 30
    assert card["transform"]["scale"] == model.transform.scale
    loaded = load_model(path)
    x, t, th = torch.randn(2, 1, 16, 16), torch.tensor([3, 30]), torch.tensor([[0.3, 0.8]] * 2)
    torch.testing.assert_close(loaded(x, t, th), model(x, t, th), rtol=0, atol=0)
    assert loaded.card["metrics"]["validation"]["loss"] == 0.5
    # by name, through the search path
    monkeypatch.setenv("DIFFINFER_MODEL_PATH", str(tmp_path))
    assert load_model("tiny").field == model.field
    # saving again replaces the directory atomically
    save_model(_tiny_model(spectral=True), path)
    assert sorted(p.name for p in path.iterdir()) == [CARD_FILE, WEIGHTS_FILE]


def test_model_directory_errors(tmp_path):
    path = save_model(_tiny_model(), tmp_path / "m")
    with pytest.raises(DataFileError, match="not found"):
        load_model(tmp_path / "absent")
    with pytest.raises(DataFileError, match="not found"):
        load_model("no-such-model")
    # corrupted weights: sha256 mismatch
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="sha256"):
        load_model(path)
    # a card that disagrees with the weights
    path = save_model(_tiny_model(), tmp_path / "m2")
    card = json.loads((path / CARD_FILE).read_text())
    card["architecture"]["base_channels"] = 16
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(DataFileError, match="was edited"):  # card_sha256 catches the edit
        load_model(path)
    unsealed = {k: v for k, v in card.items() if k != "card_sha256"}
    (path / CARD_FILE).write_text(json.dumps(unsealed))
    with pytest.raises(DataFileError, match="has no card_sha256"):  # deleted, not a warning
        load_model(path)
    # resealed (as a buggy writer would): the weights still refuse to fit the card
    (path / CARD_FILE).write_text(json.dumps(seal_card(card)))
    with pytest.raises(DataFileError, match="do not match the architecture"):
        load_model(path)
    card["architecture"]["base_channels"] = 8
    card["architecture"]["spectral"] = False  # the weights hold spectral-branch tensors
    (path / CARD_FILE).write_text(json.dumps(seal_card(card)))
    with pytest.raises(DataFileError, match="unexpected"):
        load_model(path)
    (path / CARD_FILE).write_text("{ truncated")
    with pytest.raises(DataFileError, match="not valid JSON"):
        load_model(path)
    with pytest.raises(InputError, match="oracle"):
        save_model(DiffusionModel.oracle(), tmp_path / "oracle")


def test_unet_with_spectral_branch_needs_the_schedule():
    with pytest.raises(InputError, match="schedule"):
        UNet(UNetConfig(spectral=True))


@pytest.mark.slow
def test_oracle_ddpm_spectrum_with_many_maps(sim):
    """256 ancestral-sampled maps: the sampler's predicted spectrum holds at 4x the precision."""
    model = DiffusionModel.oracle(sim)
    y = model.sample(THETA, 256, sampler="ddpm", seed=21, density=False)
    power = _binned_power(y, 64, 500.0)
    _, lam = sim.model_moments(torch.as_tensor(THETA)[None])
    lam = lam[0].numpy()
    binned = bin_modes(lam * sampler_variance_ratio(lam, model.schedule, 1000, "ddpm"), 500.0)
    z = (power.mean(0) - binned.power) / (binned.power / np.sqrt(256 * binned.n_modes / 2))
    assert stats.chi2.sf(np.sum(z**2), df=len(z)) > 1e-3, z.round(2)


def test_a_card_whose_priors_disagree_is_a_data_error(tmp_path):
    path = save_model(_tiny_model(), tmp_path / "m")
    card = json.loads((path / CARD_FILE).read_text())
    card["field"]["prior"] = {"Omega_m": [0.2, 0.4], "sigma_8": [0.7, 0.9]}
    (path / CARD_FILE).write_text(json.dumps(seal_card(card)))
    with pytest.raises(DataFileError, match="prior box"):
        load_model(path)
