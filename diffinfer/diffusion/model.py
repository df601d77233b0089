"""A conditional diffusion model of maps: denoiser, schedule, transform and geometry together.

:class:`DiffusionModel` is what a user holds: it emulates maps for any theta
(:meth:`DiffusionModel.sample`, with the samplers of :mod:`diffinfer.diffusion.samplers`;
UniPC with 50 denoiser calls unless told), gives the training loss,
and carries its model card. The denoiser is a trained :class:`~diffinfer.diffusion.UNet` or,
for the log-normal simulator, the exact :class:`~diffinfer.diffusion.OracleDenoiser`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from diffinfer.diffusion.oracle import OracleDenoiser
from diffinfer.diffusion.samplers import (
    DEFAULT_SPACING,
    SAMPLERS,
    SPACINGS,
    VPDenoiser,
    denoiser_calls,
    grid_points,
    noise_levels,
    run_sampler,
    timesteps,
)
from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.diffusion.unet import UNet, UNetConfig
from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig, as_density, as_maps
from diffinfer.fields.transform import Transform
from diffinfer.parameters import as_theta
from diffinfer.simulators.lognormal import LognormalSimulator
from diffinfer.validation import check_bool, check_choice, check_float, check_int

PRECISIONS = ("fp32", "bf16")
# emulation without a sampler named: chosen by scripts/sampler_validation.py (docs/diffusion.md)
DEFAULT_SAMPLER = "unipc"
DEFAULT_STEPS = 50


def default_steps(sampler: str, n_timesteps: int) -> int:
    """Denoiser calls of a sampler unless told: every timestep for ddpm, else
    :data:`DEFAULT_STEPS` (at most T)."""
    return n_timesteps if sampler == "ddpm" else min(DEFAULT_STEPS, n_timesteps)


def autocast(device: torch.device | str, precision: str):
    """The autocast context of a precision name: ``"fp32"`` (off) or ``"bf16"``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether the device computes bf16 natively: a GPU that supports it, or a CPU whose
    oneDNN has bf16 kernels (AVX-512 / AMX). Elsewhere bf16 is emulated and several times
    slower than fp32 (docs/performance.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device | str, precision: str) -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` picks bf16 where the device has it natively."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {(*PRECISIONS, 'auto')}, got {precision!r}")
    return precision


def map_generator(seed: int, row: int, index: int) -> torch.Generator:
    """The torch generator of map ``index`` of parameter row ``row`` under ``seed``.

    Derived from ``numpy.random.SeedSequence(seed, spawn_key=(row, index))``, so each map's
    noise does not depend on how many maps are drawn at once.
    """
    state = np.random.SeedSequence(seed, spawn_key=(row, index)).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class DiffusionModel(nn.Module):
    """A conditional DDPM over model-space maps.

    Parameters
    ----------
    denoiser
        Module ``(x_t (B, 1, N, N), t (B,), theta (B, 2)) -> eps_hat``.
    schedule
        Noise schedule.
    transform
        Density to model space.
    field
        Map geometry (size, box, slab depth) and prior box the model was trained for.
    card
        The model card (metadata; see :func:`~diffinfer.diffusion.checkpoint.save_model`).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: NoiseSchedule,
        transform: Transform,
        field: FieldConfig,
        card: dict | None = None,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.schedule = schedule
        self.transform = transform
        self.field = field
        self.card = dict(card or {})

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_config(
        cls,
        unet: UNetConfig,
        schedule: NoiseSchedule,
        transform: Transform,
        field: FieldConfig,
        card: dict | None = None,
    ) -> DiffusionModel:
        """A new (untrained) U-Net model."""
        if unet.prior != field.prior:
            raise InputError(
                f"the U-Net's prior box {unet.prior} differs from the field's {field.prior}"
            )
        return cls(UNet(unet, schedule), schedule, transform, field, card)

    @classmethod
    def oracle(
        cls, simulator: LognormalSimulator | None = None, schedule: NoiseSchedule | None = None
    ) -> DiffusionModel:
        """The exact model of the log-normal simulator (default geometry and linear schedule)."""
        simulator = simulator or LognormalSimulator()
        schedule = schedule or NoiseSchedule()
        card = {"name": "oracle", "architecture": {"kind": "oracle"}}
        return cls(
            OracleDenoiser(simulator, schedule),
            schedule,
            simulator.transform,
            simulator.config,
            card,
        )

    @property
    def data_mean(self) -> float:
        """Mean density of the training maps in the card's data units: 1 for density
        contrasts rho / rho_mean (the simulator's and the shipped models'); for maps in
        physical units (a transform shift of ln rho beyond +-2), exp(shift + scale^2 / 2), the
        mean of a log-normal with the transform's constants."""
        shift, scale = self.transform.shift, self.transform.scale
        return 1.0 if abs(shift) <= 2 else float(math.exp(shift + scale**2 / 2))

    @property
    def is_oracle(self) -> bool:
        """Whether the denoiser is the closed-form oracle."""
        return isinstance(self.denoiser, OracleDenoiser)

    @property
    def device(self) -> torch.device:
        """Device of the denoiser's weights (CPU for the oracle)."""
        p = next(self.denoiser.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # ------------------------------------------------------------------- checks
    def check_maps(self, y: np.ndarray | torch.Tensor, *, what: str = "model-space map"):
        """Validate model-space maps against the card: (N, N) or (M, N, N), finite."""
        return as_maps(y, n_pix=self.field.n_pix, what=what)

    def to_model_space(
        self, density: np.ndarray | torch.Tensor, *, kind: str = "density"
    ) -> torch.Tensor:
        """Density maps to model space, checked against the card and for the density-contrast
        convention (``kind``: what the maps hold, see :func:`~diffinfer.fields.grid.as_density`)."""
        density = as_density(density, kind=kind, n_pix=self.field.n_pix, data_mean=self.data_mean)
        return self.transform.forward(density)

    # ----------------------------------------------------------------- denoiser
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Predicted noise eps_hat(x_t, t, theta), shape of ``x_t``."""
        return self.denoiser(x_t, t, theta)

    def loss(
        self,
        y: torch.Tensor,
        theta: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        denoiser: nn.Module | None = None,
    ) -> torch.Tensor:
        """Per-map epsilon-MSE (mean over pixels), shape (B,).

        Parameters
        ----------
        y
            Clean model-space maps (B, 1, N, N).
        theta
            Parameters (B, 2), physical units.
        t
            Timesteps (B,) in 1 ... T.
        noise
            Standard normal noise, shape of ``y``.
        denoiser
            Use this module instead of ``self.denoiser`` (e.g. its DDP wrapper).
        """
        x_t = self.schedule.q_sample(y, t, noise)
        eps = (denoiser or self.denoiser)(x_t, t, theta)
        return (eps.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))

    # --------------------------------------------------------------- emulation
    @torch.no_grad()
    def sample(
        self,
        theta: np.ndarray | torch.Tensor,
        n: int = 1,
        *,
        steps: int | None = None,
        sampler: str = DEFAULT_SAMPLER,
        spacing: str | None = None,
        eta: float | None = None,
        seed: int = 0,
        batch_size: int | None = 64,
        precision: str = "fp32",
        density: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        """Emulate maps.

        Parameters
        ----------
        theta
            One parameter vector (2,) or a batch (B, 2), inside the prior box.
        n
            Maps per parameter vector.
        steps
            Denoiser calls, 1 ... T (``"heun"`` makes two per step but one on the last, so an
            even number leaves one unused); default T for ``"ddpm"``, else
            :data:`DEFAULT_STEPS` (at most T).
        sampler
            One of :data:`~diffinfer.diffusion.samplers.SAMPLERS`
            (:mod:`diffinfer.diffusion.samplers`): ``"unipc"`` (the default: UniPC-bh2,
            within 0.3 % of the converged spectrum at 50 calls, docs/diffusion.md),
            ``"dpmpp-2m"`` (DPM-Solver++(2M)), ``"heun"``, ``"ddim"`` (deterministic DDIM) or
            ``"ddpm"`` (ancestral sampling, respaced with fewer than T steps).
        spacing
            How the timesteps are spread (:func:`~diffinfer.diffusion.samplers.timesteps`):
            ``"uniform"``, ``"trailing"``, ``"quadratic"``, ``"karras"`` or ``"logsnr"``;
            default the sampler's own (:data:`~diffinfer.diffusion.samplers.DEFAULT_SPACING`).
        eta
            Stochasticity of ``"ddpm"`` / ``"ddim"`` (0 ... 1; default 1 and 0); the other
            samplers are deterministic and refuse it.
        seed
            A non-negative integer. Map j of parameter row b draws all its noise from
            :func:`map_generator` ``(seed, b, j)``: the noise does not depend on
            ``batch_size``, and the maps agree across batch sizes to rounding (~1e-12
            relative; batched FFTs round differently), bit for bit for the same call.
        batch_size
            Maps denoised together (a positive integer), or None for all at once.
        precision
            ``"fp32"`` or ``"bf16"`` (autocast; faster on CPUs with bf16 units).
        density
            Return densities (data units); otherwise model-space maps.
        progress
            Show a progress bar over denoiser calls.

        Returns
        -------
        numpy.ndarray
            Shape (n, N, N) for one theta, (B, n, N, N) for a batch; float64.

        Raises
        ------
        InputError
            Any argument of the wrong type or out of range (checked before any work), naming
            the argument, the value and what is expected.
        OutsidePriorError
            A parameter vector outside the model's prior box.
        """
        # every argument is checked here, before anything is computed
        sampler = check_choice("sampler", sampler, SAMPLERS)
        n = check_int("n", n, low=1, what="maps per parameter vector")
        single = np.ndim(theta) == 1
        complex_theta = theta.is_complex() if isinstance(theta, torch.Tensor) else None
        if complex_theta is None:
            try:
                complex_theta = np.iscomplexobj(np.asarray(theta))
            except (TypeError, ValueError):  # ragged lists and the like: as_theta says why
                complex_theta = False
        if complex_theta:
            raise InputError("theta must be real (Omega_m, sigma_8), got complex values")
        theta = as_theta(theta, self.field.prior)
        if theta.shape[0] == 0:
            raise InputError("theta has no parameter vectors (shape (0, 2)); give at least one")
        T = self.schedule.n_steps
        steps = default_steps(sampler, T) if steps is None else steps
        steps = check_int("steps", steps, low=1, high=T, what="denoiser calls, at most T")
        spacing = check_choice("spacing", spacing or DEFAULT_SPACING[sampler], SPACINGS)
        if eta is not None:
            if sampler not in ("ddpm", "ddim"):
                raise InputError(
                    f"eta sets the stochasticity of the ddpm and ddim samplers; {sampler!r} is "
                    "deterministic: leave eta out"
                )
            eta = check_float("eta", eta, low=0.0, high=1.0)
        seed = check_int("seed", seed, low=0)
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, low=1, what="or None")
        precision = check_choice("precision", precision, PRECISIONS)
        density = check_bool("density", density)
        progress = check_bool("progress", progress)
        points = grid_points(sampler, steps)
        sigmas = noise_levels(self.schedule, timesteps(self.schedule, points, spacing))
        rows = np.repeat(np.arange(theta.shape[0]), n)
        index = np.tile(np.arange(n), theta.shape[0])
        out = np.empty((rows.size, self.field.n_pix, self.field.n_pix))
        batch_size = rows.size if batch_size is None else batch_size
        calls = denoiser_calls(sampler, points)
        with tqdm(total=calls * rows.size, disable=not progress, desc="sampling",
                  unit="map-call", leave=False) as bar:  # fmt: skip
            for lo in range(0, rows.size, batch_size):
                sl = slice(lo, lo + batch_size)
                gens = [
                    map_generator(seed, int(r), int(j))
                    for r, j in zip(rows[sl], index[sl], strict=True)
                ]
                y = self._sample_batch(theta[rows[sl]], sampler, sigmas, eta, gens, precision, bar)
                out[sl] = self.transform.inverse(y).numpy() if density else y.numpy()
        out = out.reshape(theta.shape[0], n, self.field.n_pix, self.field.n_pix)
        return out[0] if single else out

    def _sample_batch(
        self,
        theta: torch.Tensor,
        sampler: str,
        sigmas: list[float],
        eta: float | None,
        gens: list[torch.Generator],
        precision: str,
        bar: tqdm,
    ) -> torch.Tensor:
        device, N = self.device, self.field.n_pix

        def noise() -> torch.Tensor:
            z = torch.stack([torch.randn(1, N, N, generator=g, dtype=torch.float64) for g in gens])
            return z.to(device)

        theta_d = theta.to(device=device, dtype=torch.float32)

        def eps(x_t: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((len(gens),), t, dtype=torch.int64, device=device)
            with autocast(device, precision):
                out = self.denoiser(x_t.float(), tt, theta_d)
            bar.update(len(gens))
            return out.to(torch.float64)

        x = run_sampler(sampler, VPDenoiser(eps, self.schedule), noise(), sigmas, eta=eta,
                        noise=noise)  # fmt: skip
        return x[:, 0].cpu()
