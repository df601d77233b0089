"""Shared fixtures: simulators are cached per configuration for the whole run."""

from __future__ import annotations

import pytest

from diffinfer.fields import FieldConfig
from diffinfer.simulators import LognormalSimulator


@pytest.fixture(scope="session")
def sim() -> LognormalSimulator:
    """The reference configuration: 64^2, L = 500 Mpc/h, d = 50 Mpc/h."""
    return LognormalSimulator()


@pytest.fixture(scope="session")
def tiny_sim() -> LognormalSimulator:
    """An 8 x 8 map with the reference pixel size, for brute-force comparisons."""
    return LognormalSimulator(FieldConfig(n_pix=8, box_size=62.5, depth=50.0))
