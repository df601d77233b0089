"""What every likelihood builder gives :func:`diffinfer.posterior`: one record, whichever the
likelihood (diffusion, exact, power spectrum, NPE)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffinfer.parameters import PriorBox

Locator = Callable[[], tuple[np.ndarray, np.ndarray, int]]
"""A locator returns the posterior's centre (2,), its covariance (2, 2) and the log-density
evaluations it spent, or raises :class:`~diffinfer.errors.LocateError` naming the cause."""


@dataclass
class BuiltLikelihood:
    """A likelihood of the map(s) at hand, ready for a sampler.

    Attributes
    ----------
    log_like
        Log-likelihood of a batch of theta (B, 2) -> (B,), untempered.
    box
        The prior box of the model or reference (the default prior).
    locator
        Finds the posterior's centre and covariance for an aligned grid, or None.
    description
        What it is, in words (the samples' label and the calibration key of a model card).
    settings
        The settings that determine it (recorded in the provenance).
    temperature
        The temperature its model card records for it, or None.
    info
        Further entries of the posterior's ``info`` (term set, noise draws, cost).
    stochastic
        The diffusion likelihood whose Monte Carlo error the posterior controls (and whose
        chunks drive the progress bar), or None for a deterministic likelihood.
    """

    log_like: Callable[[torch.Tensor], torch.Tensor]
    box: PriorBox
    locator: Locator | None
    description: str
    settings: dict
    temperature: float | None = None
    info: dict = field(default_factory=dict)
    stochastic: object | None = None
