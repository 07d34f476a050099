"""Score histograms per class: PxAP on each class's images, and the whole set's as their sum."""

from __future__ import annotations

import torch

from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.protocol import Batch, Metric


class ClassHistograms(Metric):
    """One ``PixelHistogram`` per class of the annotated images (each pixel binned once, by its
    image's label); ``total()`` is the histogram of every image. ``merge``/``sync`` sum the counts
    class by class (exact and order-free)."""

    needs = frozenset({"maps"})

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        self.num_classes = num_classes
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.by_class: dict[int, PixelHistogram] = {}

    def update(self, batch: Batch) -> None:
        """The batch's annotated images, each into its label's histogram."""
        b = batch.localized
        b.require(self, "maps", "masks", "labels")
        if not len(b.maps):
            return
        for c in b.labels.unique().tolist():
            if not 0 <= c < self.num_classes:
                raise ValueError(f"label {c} outside 0..{self.num_classes - 1}")
            self._histogram(c).update(b.select(b.labels == c))

    def _histogram(self, c: int) -> PixelHistogram:
        return self.by_class.setdefault(c, PixelHistogram(self.device))

    def merge(self, other: ClassHistograms) -> ClassHistograms:
        self._check_mergeable(other, num_classes=self.num_classes)
        for c, hist in sorted(other.by_class.items()):
            self._histogram(c).merge(hist)
        return self

    def sync(self) -> ClassHistograms:
        """Every class summed over the ranks (a collective: every rank syncs every class, present
        in its shard or not); classes without pixels on any rank are dropped."""
        for c in range(self.num_classes):
            merged = self._histogram(c).sync()
            if int(merged.fg.sum() + merged.bg.sum()) == 0:
                del self.by_class[c]
        return self

    def total(self) -> PixelHistogram:
        """The histogram of every annotated image (the sum of the classes')."""
        hist = PixelHistogram(self.device)
        for c in sorted(self.by_class):
            hist.merge(self.by_class[c])
        return hist

    def compute(self) -> dict[int, dict]:
        """Each class's ``PixelHistogram.compute()``, by class index."""
        return {c: self.by_class[c].compute() for c in sorted(self.by_class)}
