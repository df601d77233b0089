"""Map data sets in the CAMELS Multifield Dataset (CMD) file format, real or synthetic."""

from diffinfer.data.camels import (
    MAPS_PER_COSMOLOGY,
    PARAM_COLUMNS,
    CamelsMaps,
    block_downsample,
    dihedral,
    maps_filename,
)
from diffinfer.data.synthetic import latin_hypercube, write_synthetic_dataset

__all__ = [
    "MAPS_PER_COSMOLOGY",
    "PARAM_COLUMNS",
    "CamelsMaps",
    "block_downsample",
    "dihedral",
    "latin_hypercube",
    "maps_filename",
    "write_synthetic_dataset",
]
