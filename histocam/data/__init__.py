"""Data layer: readers -> ``Sample``; splits; joint transforms; stain augmentation; checks."""

from histocam.data.config import DataConfig
from histocam.data.dataset import SPLITS, FileDataset, Layout, Record
from histocam.data.errors import DataError, Problem, Severity
from histocam.data.open import DATASETS, open_dataset, open_source
from histocam.data.sample import Sample

__all__ = [
    "DATASETS", "SPLITS", "DataConfig", "DataError", "FileDataset", "Layout", "Problem", "Record",
    "Sample", "Severity", "open_dataset", "open_source",
]
