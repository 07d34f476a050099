"""Metrics as streaming accumulators (docs/protocol.md, "Metrics"): PxAP, confusion rates,
Dice/IoU, accuracy, separability J, paired t-test, and map validation. Every accumulator is a
``Metric`` (``histocam.metrics.protocol``): ``update(batch)`` with the one ``Batch`` type, compute,
reset, merge, and sync across processes."""

from histocam.metrics.class_histograms import ClassHistograms
from histocam.metrics.classification import ClassificationAccuracy
from histocam.metrics.confusion import area_rates, at_threshold, best_threshold, curves
from histocam.metrics.histogram import THRESHOLDS, PixelHistogram, bin_index
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.predictions import Predictions
from histocam.metrics.protocol import Batch, Metric
from histocam.metrics.pxap import PxAP, pxap_from_histograms
from histocam.metrics.separability import SeparabilityIndex, separability_index
from histocam.metrics.stats import paired_ttest
from histocam.metrics.validation import MapError, validate_maps

__all__ = [
    "THRESHOLDS", "Batch", "ClassHistograms", "ClassificationAccuracy", "MapError", "Metric",
    "PerImageScores", "PixelHistogram", "Predictions", "PxAP", "SeparabilityIndex", "area_rates",
    "at_threshold", "best_threshold", "bin_index", "curves", "paired_ttest",
    "pxap_from_histograms", "separability_index", "validate_maps",
]
