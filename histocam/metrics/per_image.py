"""Per-image localisation scores (for per-image CSVs and paired tests between methods).

All per-image quantities come from per-image 1002-bin histograms (one ``bincount`` per image): AP
(PxAP's formula restricted to one image; NaN when the image has no foreground), and
foreground/background Dice and IoU at an operating threshold τ (chosen on valpx beforehand).
``rows`` keep the order of ``update``; ``merge`` appends the other instance's rows and ``sync``
concatenates the ranks' rows in rank order (``histocam.metrics.protocol``), so the rows are
deterministic but follow the sharding: look rows up by ``id`` rather than by position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histocam.metrics.confusion import threshold_index
from histocam.metrics.histogram import N_BINS, histogram_counts
from histocam.metrics.protocol import Batch, Metric
from histocam.metrics.pxap import pxap_from_histograms
from histocam.metrics.validation import validate_ignore, validate_maps

SCORES = ("ap", "dice_fg", "dice_bg", "iou_fg", "iou_bg", "fg_fraction")


class PerImageScores(Metric):
    """One row of scores per image (``rows``: dicts with ``id`` and ``SCORES``), at threshold ``tau``."""

    def __init__(self, tau: float = 0.5) -> None:
        self.tau = float(tau)
        self._t = threshold_index(tau)
        self.reset()

    def reset(self) -> None:
        self.rows: list[dict] = []

    needs = frozenset({"maps"})

    def update(self, batch: Batch) -> None:
        """Add one row per annotated image of the batch (its ``ids``, ``maps`` and ``masks``).
        ``ignore`` as in ``PixelHistogram.update``: the image's scores, ``fg_fraction`` included,
        are those of its other pixels (an image with every pixel ignored gets NaN scores and
        ``fg_fraction`` 0)."""
        b = batch.localized
        b.require(self, "maps", "masks", "ids")
        if len(b.maps):
            self._add(b.maps, b.masks, b.ids, b.ignore)

    def _add(self, maps: torch.Tensor, masks: torch.Tensor, ids: Sequence[str],
             ignore: torch.Tensor | None) -> None:
        validate_maps(maps, masks, ids)
        ignore = validate_ignore(ignore, maps)
        if len(ids) != maps.shape[0]:
            raise ValueError(f"{len(ids)} ids for a batch of {maps.shape[0]} maps")
        b = maps.shape[0]
        counts = []
        for i in range(b):
            scores, truth = maps[i], masks[i].bool()
            if ignore is not None:
                keep = ~ignore[i].to(scores.device)
                scores, truth = scores[keep], truth.to(scores.device)[keep]
            counts.append(histogram_counts(scores, truth))
        hist = torch.stack(counts).reshape(b, 2, N_BINS).double().cpu().numpy()
        for i in range(b):
            self.rows.append({"id": ids[i], **self._scores(hist[i, 1], hist[i, 0])})

    def merge(self, other: PerImageScores) -> PerImageScores:
        """Append ``other``'s rows after this instance's (same ``tau`` required)."""
        self._check_mergeable(other, tau=self.tau)
        self.rows.extend(dict(row) for row in other.rows)
        return self

    def compute(self) -> dict:
        """Mean of each score over the images where it is defined, and a copy of the rows."""
        return {
            "tau": self.tau, "n_images": len(self.rows),
            "mean": {key: self.mean(key) for key in SCORES},
            "rows": [dict(row) for row in self.rows],
        }

    def _scores(self, fg: np.ndarray, bg: np.ndarray) -> dict[str, float]:
        n_fg, n_bg = fg.sum(), bg.sum()
        ap = pxap_from_histograms(fg, bg) if n_fg > 0 else float("nan")  # the image's own PxAP
        tp = fg[self._t :].sum()
        fp = bg[self._t :].sum()
        fn, tn = n_fg - tp, n_bg - fp

        def ratio(a: float, b: float) -> float:
            return float(100 * a / b) if b > 0 else float("nan")

        return {
            "ap": ap,
            "dice_fg": ratio(2 * tp, 2 * tp + fp + fn), "dice_bg": ratio(2 * tn, 2 * tn + fp + fn),
            "iou_fg": ratio(tp, tp + fp + fn), "iou_bg": ratio(tn, tn + fp + fn),
            "fg_fraction": float(n_fg / max(n_fg + n_bg, 1)),
        }

    def column(self, key: str) -> np.ndarray:
        return np.array([row[key] for row in self.rows], dtype=float)

    def mean(self, key: str) -> float:
        """Mean over images where the score is defined (e.g. Dice⁺ is undefined without any
        foreground in both prediction and mask)."""
        values = self.column(key)
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")
