"""The emulation samplers (diffinfer.diffusion.samplers) against an independent implementation
(HuggingFace diffusers' schedulers), against the closed form of the oracle, and their inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from diffinfer.diffusion import DiffusionModel, NoiseSchedule
from diffinfer.diffusion.oracle import sampler_variance_ratio
from diffinfer.diffusion.samplers import (
    SAMPLERS,
    SPACINGS,
    VPDenoiser,
    noise_levels,
    run_sampler,
    sigma_of,
    timesteps,
)
from diffinfer.errors import InputError
from diffinfer.fields.stats import bin_modes, default_bins

diffusers = pytest.importorskip("diffusers")

THETA = np.array([0.3, 0.8])
W = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3


def toy_eps(x: torch.Tensor, t: float) -> torch.Tensor:
    """A smooth nonlinear epsilon-model of (x_t, t), t a (possibly fractional) diffusers step."""
    return torch.tanh(x @ W) * (0.5 + t / 2000) + 0.1 * x * math.cos(t / 300)


def run_diffusers(
    scheduler, n: int
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[float, float]]]:
    """The diffusers sampling loop with ``toy_eps``: start, result, and (sigma, t) per call."""
    scheduler.set_timesteps(n)
    start = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = start * scheduler.init_noise_sigma
    calls = []
    ac = scheduler.alphas_cumprod.double()
    for t in scheduler.timesteps:
        if hasattr(scheduler, "sigmas") and type(scheduler).__name__ == "HeunDiscreteScheduler":
            if scheduler.step_index is None:
                scheduler._init_step_index(t)
            sigma = float(scheduler.sigmas[scheduler.step_index])
        else:
            a = float(ac[int(t)])
            sigma = math.sqrt((1 - a) / a)
        eps = toy_eps(scheduler.scale_model_input(x, t), float(t))
        calls.append((sigma, float(t)))
        x = scheduler.step(eps, t, x).prev_sample
    # ours start from x = x_T sqrt(1 + sigma_0^2); the VP schedulers of diffusers from x_T
    # (the same), its Heun (variance-exploding form) from x_T sigma_0
    if float(scheduler.init_noise_sigma) != 1.0:
        start = start * float(scheduler.init_noise_sigma) / math.sqrt(1 + calls[0][0] ** 2)
    return start, x, calls


def run_ours(sampler: str, start: torch.Tensor, calls: list[tuple[float, float]]) -> torch.Tensor:
    """Our sampler over the sigmas diffusers visited, with the same model."""
    sigmas: list[float] = []
    step_of: dict[float, float] = {}
    for sigma, t in calls:
        if not sigmas or not math.isclose(sigmas[-1], sigma, rel_tol=1e-9):
            sigmas.append(sigma)
            step_of[round(sigma, 9)] = t

    def denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x - sigma * toy_eps(x / math.sqrt(1 + sigma**2), step_of[round(sigma, 9)])

    return run_sampler(sampler, denoiser, start, [*sigmas, 0.0])


LINEAR = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}


@pytest.mark.parametrize(
    ("sampler", "scheduler", "n"),
    [
        ("ddim", lambda: diffusers.DDIMScheduler(**LINEAR, clip_sample=False), 20),
        ("dpmpp-2m", lambda: diffusers.DPMSolverMultistepScheduler(**LINEAR), 20),
        ("unipc", lambda: diffusers.UniPCMultistepScheduler(**LINEAR), 20),
        ("unipc", lambda: diffusers.UniPCMultistepScheduler(**LINEAR), 8),
        ("heun", lambda: diffusers.HeunDiscreteScheduler(**LINEAR), 10),
    ],
)
def test_samplers_agree_with_diffusers(sampler, scheduler, n):
    """Each sampler reproduces the diffusers scheduler of the same method, call for call
    (diffusers keeps its schedule in float32: agreement to 1e-6 of the output's scale)."""
    start, theirs, calls = run_diffusers(scheduler(), n)
    ours = run_ours(sampler, start, calls)
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) < 1e-6 * scale


def test_ddpm_over_every_timestep_is_the_closed_form_recursion():
    """DDPM over all T timesteps: the oracle's linear response equals the direct variance
    recursion of the ancestral update (computed here independently, in the VP form)."""
    sched = NoiseSchedule()
    lam = np.array([0.05, 0.3, 1.0, 4.0])
    ab = sched.alpha_bar.numpy()
    var = np.ones_like(lam)
    for t in range(sched.n_steps, 0, -1):
        a, a_prev = ab[t], ab[t - 1]
        gain = np.sqrt(1 - a) / (a * lam + 1 - a)  # oracle eps_hat = gain * x_t
        s2 = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        c_eps = np.sqrt(max(1 - a_prev - s2, 0.0))
        g = np.sqrt(a_prev) * (1 - np.sqrt(1 - a) * gain) / np.sqrt(a) + c_eps * gain
        var = g**2 * var + s2
    np.testing.assert_allclose(sampler_variance_ratio(lam, sched, 1000, "ddpm"), var / lam,
                               rtol=1e-10)  # fmt: skip


def test_higher_order_samplers_converge_faster_than_ddim():
    """With the oracle, doubling the calls from 50 to 100 divides DDIM's spectrum error by
    about 2 (first order) and the second-order samplers' by more than 3."""
    sim = DiffusionModel.oracle().denoiser.simulator
    _, lam = sim.model_moments(torch.as_tensor(THETA)[None])
    lam = lam[0].numpy()
    sched = NoiseSchedule()

    def error(sampler, calls, spacing):
        r = sampler_variance_ratio(lam, sched, calls, sampler, spacing=spacing)
        return float(np.abs(r - 1).mean())

    ddim = error("ddim", 50, "uniform") / error("ddim", 100, "uniform")
    assert 1.7 < ddim < 2.3
    for sampler in ("dpmpp-2m", "unipc"):
        assert error(sampler, 50, "logsnr") / error(sampler, 100, "logsnr") > 3
    # and at 50 calls they are well below DDIM's 9 %
    assert error("unipc", 50, "logsnr") < 0.005


@pytest.mark.parametrize("sampler", ["heun", "dpmpp-2m", "unipc"])
def test_emulated_spectra_match_the_closed_form(sampler):
    """Maps emulated with the oracle have the binned spectrum the linear response predicts,
    within the scatter of 48 maps (2.5 sigma per bin on average)."""
    model = DiffusionModel.oracle()
    sim = model.denoiser.simulator
    n, box = sim.config.n_pix, sim.config.box_size
    edges = default_bins(n, box)
    _, lam = sim.model_moments(torch.as_tensor(THETA)[None])
    lam = lam[0].numpy()
    predicted = bin_modes(lam * sampler_variance_ratio(lam, model.schedule, 20, sampler), box,
                          edges)  # fmt: skip
    maps = model.sample(THETA, 48, steps=20, sampler=sampler, seed=5, density=False)
    power = bin_modes(np.abs(np.fft.fft2(maps)) ** 2 / n**2, box, edges).power.mean(0)
    sigma = predicted.power / np.sqrt(48 * predicted.n_modes / 2)
    z = (power - predicted.power) / sigma
    assert np.sqrt(np.mean(z**2)) < 2.5


class CountingDenoiser(torch.nn.Module):
    """The oracle, counting its calls."""

    def __init__(self, oracle: torch.nn.Module) -> None:
        super().__init__()
        self.oracle = oracle
        self.calls = 0

    def forward(self, x_t, t, theta):
        self.calls += 1
        return self.oracle(x_t, t, theta)


@pytest.mark.parametrize(("sampler", "steps", "calls"),
                         [("ddpm", 7, 7), ("ddim", 7, 7), ("heun", 7, 7), ("heun", 8, 7),
                          ("dpmpp-2m", 7, 7), ("unipc", 7, 7)])  # fmt: skip
def test_steps_are_denoiser_calls(sampler, steps, calls):
    """``steps`` is the number of denoiser calls (Heun: an odd number, one unused if even)."""
    model = DiffusionModel.oracle()
    model.denoiser = CountingDenoiser(model.denoiser)
    maps = model.sample(THETA, 2, steps=steps, sampler=sampler, seed=0)
    assert model.denoiser.calls == calls
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("points", [1, 2, 10, 50, 100, 1000])
def test_timesteps_are_distinct_decreasing_and_in_range(spacing, points):
    ts = timesteps(NoiseSchedule(), points, spacing)
    assert len(ts) == points
    assert ts.dtype == np.int64 and ts.max() <= 1000 and ts.min() >= 1
    assert np.all(np.diff(ts) < 0)
    if spacing != "trailing":
        assert ts[0] == 1000
        assert points == 1 or ts[-1] <= (2 if spacing in ("uniform", "quadratic") else 5)
    sig = noise_levels(NoiseSchedule(), ts)
    assert sig[-1] == 0.0 and all(a > b for a, b in itertools.pairwise(sig))


def test_spacings_follow_their_definitions():
    sched = NoiseSchedule()
    assert list(timesteps(sched, 4, "trailing")) == [1000, 750, 500, 250]
    assert list(timesteps(sched, 3, "uniform")) == [1000, 500, 1]
    quad = timesteps(sched, 5, "quadratic")
    np.testing.assert_allclose(quad, 1 + 999 * np.linspace(1, 0, 5) ** 2, atol=0.5)
    # logsnr: log sigma evenly spaced (to the timestep grid's resolution)
    log_sigma = np.log(sigma_of(sched)[timesteps(sched, 10, "logsnr")])
    steps = np.diff(log_sigma)
    assert np.ptp(steps) < 0.15 * abs(steps.mean())


def test_bad_sampler_arguments_are_refused_before_any_work():
    model = DiffusionModel.oracle()
    with pytest.raises(InputError, match="sampler must be one of"):
        model.sample(THETA, sampler="euler")
    with pytest.raises(InputError, match="spacing must be one of"):
        model.sample(THETA, sampler="unipc", spacing="cosine")
    with pytest.raises(InputError, match=r"unipc.*deterministic: leave eta out"):
        model.sample(THETA, sampler="unipc", eta=0.5)
    with pytest.raises(InputError, match="steps"):
        model.sample(THETA, sampler="heun", steps=0)
    with pytest.raises(InputError, match="not a noise level"):
        VPDenoiser(lambda x, t: x, NoiseSchedule())(torch.zeros(1), 0.123456)
    assert set(SAMPLERS) == {"ddpm", "ddim", "heun", "dpmpp-2m", "unipc"}


def test_emulate_cli_takes_the_sampler_and_spacing(tmp_path, capsys):
    """``diffinfer emulate --sampler unipc --spacing logsnr --steps 5`` writes its maps and
    names sampler, spacing and calls in the figure's title."""
    from diffinfer.cli import main

    out = tmp_path / "em"
    argv = ["emulate", "--model", "oracle", "--n", "2", "--sampler", "unipc", "--spacing",
            "logsnr", "--steps", "5", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    maps = np.load(out / "maps.npy")
    assert maps.shape == (2, 64, 64) and np.all(maps > 0)
    direct = DiffusionModel.oracle().sample(THETA, 2, steps=5, sampler="unipc", spacing="logsnr")
    np.testing.assert_allclose(maps, direct, rtol=1e-5)
    assert (out / "emulate.png").exists()
