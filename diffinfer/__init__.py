"""diffinfer: cosmological inference with conditional diffusion models.

The foundation in this release: a differentiable linear matter power spectrum, the
log-normal reference simulator with an exact likelihood, map statistics, and data sets in
the CAMELS Multifield Dataset format.
"""

from diffinfer.data import CamelsMaps, write_synthetic_dataset
from diffinfer.errors import DataFileError, DiffinferError, InputError, OutsidePriorError
from diffinfer.fields import (
    FieldConfig,
    LognormalSimulator,
    Transform,
    one_point_pdf,
    power_spectrum,
)
from diffinfer.parameters import DEFAULT_PRIOR, PARAM_LABELS, PARAM_NAMES, PriorBox

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRIOR",
    "PARAM_LABELS",
    "PARAM_NAMES",
    "CamelsMaps",
    "DataFileError",
    "DiffinferError",
    "FieldConfig",
    "InputError",
    "LognormalSimulator",
    "OutsidePriorError",
    "PriorBox",
    "Transform",
    "one_point_pdf",
    "power_spectrum",
    "write_synthetic_dataset",
]
