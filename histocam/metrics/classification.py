"""Image classification accuracy (CL, survey eq. 13), per class, and the confusion matrix."""

from __future__ import annotations

import numpy as np
import torch

from histocam.core.collectives import all_reduce_sum, distributed_ready
from histocam.core.results import Classification
from histocam.metrics.protocol import Batch, Metric


class ClassificationAccuracy(Metric):
    """Streaming K×K confusion matrix (rows = true class, columns = predicted).

    CL of docs/protocol.md, "Metrics" (top-1 accuracy × 100, also per class). ``merge``/``sync``
    sum the matrices (integer counts: exact and order-free).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    needs = frozenset({"logits"})

    def update(self, batch: Batch) -> None:
        """Every image of the batch: ``logits`` B×K scores (argmax taken) or B class indices,
        ``labels`` the true classes."""
        batch.require(self, "logits", "labels")
        predictions, labels = batch.logits, batch.labels
        if predictions.ndim == 2:
            predictions = predictions.argmax(dim=1)
        labels = labels.to(torch.int64).cpu()
        predictions = predictions.to(torch.int64).cpu()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels outside 0..{self.num_classes - 1}: {labels.unique().tolist()}")
        flat = labels * self.num_classes + predictions
        self.matrix += torch.bincount(flat, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes)

    def merge(self, other: ClassificationAccuracy) -> ClassificationAccuracy:
        self._check_mergeable(other, num_classes=self.num_classes)
        self.matrix += other.matrix
        return self

    def sync(self) -> ClassificationAccuracy:
        """Sum the matrices over all processes of ``torch.distributed`` (no-op when not initialised)."""
        if distributed_ready():
            self.matrix = all_reduce_sum(self.matrix)
        return self

    def compute(self) -> Classification:
        m = self.matrix.double().numpy()
        total = m.sum()
        per_class = np.divide(np.diag(m), m.sum(1), out=np.full(self.num_classes, np.nan),
                              where=m.sum(1) > 0)
        return Classification(
            accuracy=float(100 * np.trace(m) / total) if total else float("nan"),
            per_class=[float(100 * v) for v in per_class],
            confusion_matrix=self.matrix.tolist(), n_images=int(total))
