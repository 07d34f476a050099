"""Per-image localisation scores (for per-image CSVs and paired tests between methods).

All per-image quantities come from per-image 1002-bin histograms computed in one ``bincount`` per
batch: AP (PxAP's formula restricted to one image; NaN when the image has no foreground), and
foreground/background Dice and IoU at an operating threshold τ (chosen on valpx beforehand).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histocam.metrics.confusion import threshold_index
from histocam.metrics.histogram import N_BINS, histogram_counts
from histocam.metrics.validation import validate_maps


class PerImageScores:
    def __init__(self, tau: float = 0.5) -> None:
        self.tau = float(tau)
        self._t = threshold_index(tau)
        self.reset()

    def reset(self) -> None:
        self.rows: list[dict] = []

    def update(self, maps: torch.Tensor, masks: torch.Tensor, ids: Sequence[str]) -> None:
        validate_maps(maps, masks, ids)
        b = maps.shape[0]
        hist = torch.stack([histogram_counts(maps[i], masks[i].bool()) for i in range(b)])
        hist = hist.reshape(b, 2, N_BINS).double().cpu().numpy()
        for i in range(b):
            self.rows.append({"id": ids[i], **self._scores(hist[i, 1], hist[i, 0])})

    def _scores(self, fg: np.ndarray, bg: np.ndarray) -> dict[str, float]:
        tp_all = fg[::-1].cumsum()
        fp_all = bg[::-1].cumsum()
        n_fg, n_bg = fg.sum(), bg.sum()
        ap = float("nan")
        if n_fg > 0:
            pred = tp_all + fp_all
            precision = np.divide(tp_all, pred, out=np.zeros_like(pred), where=pred > 0)
            ap = float(100 * (precision[1:] * np.diff(tp_all / n_fg)).sum())
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
