"""Data sets for vdjax: the built-in spirals generator, image data sets, the shared container."""

from vdjax.data.core import Dataset, check_inputs, check_labels, split_validation
from vdjax.data.images import IMAGE_DATASETS, DataNotFoundError, check_available, load_images
from vdjax.data.spirals import SpiralsConfig, make_spirals, spirals_dataset

__all__ = [
    "IMAGE_DATASETS",
    "DataNotFoundError",
    "Dataset",
    "SpiralsConfig",
    "check_available",
    "check_inputs",
    "check_labels",
    "load_images",
    "make_spirals",
    "spirals_dataset",
    "split_validation",
]
