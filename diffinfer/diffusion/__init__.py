"""Diffusion models: schedules, denoisers (U-Net, spectral branch, oracle), sampling, files."""

from diffinfer.diffusion.checkpoint import load_model, save_model
from diffinfer.diffusion.model import DiffusionModel
from diffinfer.diffusion.oracle import OracleDenoiser
from diffinfer.diffusion.schedules import SCHEDULES, NoiseSchedule
from diffinfer.diffusion.spectral import SpectralBranch, wiener_eps
from diffinfer.diffusion.unet import UNet, UNetConfig

__all__ = [
    "SCHEDULES",
    "DiffusionModel",
    "NoiseSchedule",
    "OracleDenoiser",
    "SpectralBranch",
    "UNet",
    "UNetConfig",
    "load_model",
    "save_model",
    "wiener_eps",
]
