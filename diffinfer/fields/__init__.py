"""Maps on periodic grids: the geometry, the transform to model space and map statistics."""

from diffinfer.fields.grid import FieldConfig, downsample, wavenumber_grid
from diffinfer.fields.stats import PowerSpectrum, one_point_pdf, power_spectrum
from diffinfer.fields.transform import Transform

__all__ = [
    "FieldConfig",
    "PowerSpectrum",
    "Transform",
    "downsample",
    "one_point_pdf",
    "power_spectrum",
    "wavenumber_grid",
]
