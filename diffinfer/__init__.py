"""diffinfer: cosmological inference with conditional diffusion models.

A differentiable linear matter power spectrum, the log-normal reference simulator with an
exact likelihood, map statistics, data sets in the CAMELS Multifield Dataset format,
conditional diffusion models (periodic U-Net with a spectral branch, training, DDPM/DDIM
emulation, safetensors model directories with model cards), the diffusion likelihood,
posteriors (``diffinfer.posterior(field).sample()``) and calibration studies
(:mod:`diffinfer.calibration`).

The package has one folder per stage of the flow: ``fields`` (map geometry, transform,
statistics), ``simulators``, ``data``, ``diffusion``, ``training``, ``likelihoods``,
``inference``, ``calibration`` and ``cli``; ``store`` finds and verifies model directories.
``diffinfer.posterior`` is the function; its module is ``diffinfer.inference.posterior``;
``diffinfer.posteriors`` gives the posteriors of many maps in one pass.
"""

from diffinfer.data import CamelsMaps, write_synthetic_dataset
from diffinfer.diffusion import DiffusionModel, load_model, save_model
from diffinfer.errors import DataFileError, DiffinferError, InputError, OutsidePriorError
from diffinfer.fields import FieldConfig, Transform, one_point_pdf, power_spectrum
from diffinfer.inference.many import posteriors
from diffinfer.inference.posterior import Posterior, posterior
from diffinfer.inference.samples import Samples, arviz_labeller
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.likelihoods.spectrum import PowerSpectrumLikelihood
from diffinfer.parameters import DEFAULT_PRIOR, PARAM_LABELS, PARAM_NAMES, PriorBox
from diffinfer.prior import Prior
from diffinfer.simulators import LognormalSimulator
from diffinfer.version import __version__

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
    "Posterior",
    "PowerSpectrumLikelihood",
    "Prior",
    "PriorBox",
    "Samples",
    "Transform",
    "__version__",
    "arviz_labeller",
    "load_model",
    "one_point_pdf",
    "posterior",
    "posteriors",
    "power_spectrum",
    "save_model",
    "write_synthetic_dataset",
]
