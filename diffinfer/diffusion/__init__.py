"""Diffusion-model components: noise schedules and denoisers."""

from diffinfer.diffusion.oracle import OracleDenoiser
from diffinfer.diffusion.schedules import SCHEDULES, NoiseSchedule

__all__ = ["SCHEDULES", "NoiseSchedule", "OracleDenoiser"]
