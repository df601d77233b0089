"""Simulators of matter maps: the log-normal reference with an exact likelihood, and
particle-mesh N-body boxes through JaxPM (imported only when a box is simulated)."""

from diffinfer.simulators.lognormal import LognormalSimulator, MaximumLikelihood
from diffinfer.simulators.nbody import NBodyConfig, NBodySimulator

__all__ = ["LognormalSimulator", "MaximumLikelihood", "NBodyConfig", "NBodySimulator"]
