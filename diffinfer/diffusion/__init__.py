"""Diffusion-model components: noise schedules and denoisers."""

from diffinfer.diffusion.oracle import OracleDenoiser
from diffinfer.diffusion.schedules import SCHEDULES, NoiseSchedule
from diffinfer.diffusion.unet import UNet, UNetConfig

__all__ = ["SCHEDULES", "NoiseSchedule", "OracleDenoiser", "UNet", "UNetConfig"]
