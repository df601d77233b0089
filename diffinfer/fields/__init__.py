"""Maps on periodic grids: the log-normal reference simulator, the transform and statistics."""

from diffinfer.fields.grid import FieldConfig, downsample, wavenumber_grid
from diffinfer.fields.lognormal import LognormalSimulator, MaximumLikelihood
from diffinfer.fields.stats import PowerSpectrum, one_point_pdf, power_spectrum
from diffinfer.fields.transform import Transform

__all__ = [
    "FieldConfig",
    "LognormalSimulator",
    "MaximumLikelihood",
    "PowerSpectrum",
    "Transform",
    "downsample",
    "one_point_pdf",
    "power_spectrum",
    "wavenumber_grid",
]
