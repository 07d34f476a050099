"""What the classifier predicted for each image: the rows of the per-image table."""

from __future__ import annotations

import torch

from histocam.metrics.protocol import Batch, Metric


class Predictions(Metric):
    """One row per image (``id``, true ``label``, predicted class, its softmax probability as
    ``confidence``), in ``update`` order; ``merge`` appends and ``sync`` concatenates the ranks'
    rows in rank order, which is dataset order for contiguous shards in rank order."""

    needs = frozenset({"logits"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.rows: list[dict] = []

    def update(self, batch: Batch) -> None:
        batch.require(self, "ids", "labels", "logits")
        probs = torch.softmax(batch.logits.detach().float(), dim=1).cpu()
        for image_id, y, p in zip(batch.ids, batch.labels.cpu().tolist(), probs):
            self.rows.append({"id": image_id, "label": y, "prediction": int(p.argmax()),
                              "confidence": float(p.max())})

    def merge(self, other: Predictions) -> Predictions:
        self._check_mergeable(other)
        self.rows.extend(dict(row) for row in other.rows)
        return self

    def compute(self) -> list[dict]:
        """A copy of the rows."""
        return [dict(row) for row in self.rows]
