"""Data sets for vdjax: the built-in spirals generator, image data sets, the shared container."""

from vdjax.data.core import Dataset, check_inputs, check_labels, check_targets, split_validation
from vdjax.data.images import IMAGE_DATASETS, DataNotFoundError, check_available, load_images
from vdjax.data.regression import load_diabetes, load_uci, load_uci_benchmark, toy_dataset
from vdjax.data.spirals import SpiralsConfig, make_spirals, spirals_dataset

__all__ = [
    "IMAGE_DATASETS",
    "DataNotFoundError",
    "Dataset",
    "SpiralsConfig",
    "check_available",
    "check_inputs",
    "check_labels",
    "check_targets",
    "load_diabetes",
    "load_uci",
    "load_uci_benchmark",
    "load_images",
    "make_spirals",
    "spirals_dataset",
    "split_validation",
    "toy_dataset",
]
