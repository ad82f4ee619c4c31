"""Data sets for vdjax: the built-in spirals generator and the shared container."""

from vdjax.data.core import Dataset, check_inputs, check_labels
from vdjax.data.spirals import SpiralsConfig, make_spirals, spirals_dataset

__all__ = [
    "Dataset",
    "SpiralsConfig",
    "check_inputs",
    "check_labels",
    "make_spirals",
    "spirals_dataset",
]
