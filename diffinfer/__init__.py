"""diffinfer: cosmological inference with conditional diffusion models.

In this release: a differentiable linear matter power spectrum, the log-normal reference
simulator with an exact likelihood, map statistics, data sets in the CAMELS Multifield
Dataset format, and conditional diffusion models (periodic U-Net with an optional spectral
branch, training, DDPM/DDIM emulation, safetensors model directories with model cards).
"""

from diffinfer.data import CamelsMaps, write_synthetic_dataset
from diffinfer.diffusion import DiffusionModel, load_model, save_model
from diffinfer.errors import DataFileError, DiffinferError, InputError, OutsidePriorError
from diffinfer.fields import (
    FieldConfig,
    LognormalSimulator,
    Transform,
    one_point_pdf,
    power_spectrum,
)
from diffinfer.likelihood import DiffusionLikelihood
from diffinfer.parameters import DEFAULT_PRIOR, PARAM_LABELS, PARAM_NAMES, PriorBox

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRIOR",
    "PARAM_LABELS",
    "PARAM_NAMES",
    "CamelsMaps",
    "DataFileError",
    "DiffinferError",
    "DiffusionLikelihood",
    "DiffusionModel",
    "FieldConfig",
    "InputError",
    "LognormalSimulator",
    "OutsidePriorError",
    "PriorBox",
    "Transform",
    "load_model",
    "one_point_pdf",
    "power_spectrum",
    "save_model",
    "write_synthetic_dataset",
]
