"""PxAP (Choe et al., CVPR 2020; survey eqs. 14–16), as docs/protocol.md, "Metrics" specifies."""

from __future__ import annotations

import numpy as np
import torch

from histocam.metrics.histogram import PixelHistogram, bin_index


def pxap_from_histograms(fg: np.ndarray, bg: np.ndarray) -> float:
    """100 · Σ_i precision_i · (recall_i − recall_{i−1}), thresholds in decreasing order.

    ``fg``/``bg`` are the 1002-bin histograms. tp(τ), fp(τ) are cumulative sums from the top bin;
    precision is taken as 0 where tp + fp = 0 (those steps have zero recall increment anyway).
    """
    fg = np.asarray(fg, dtype=np.float64)
    bg = np.asarray(bg, dtype=np.float64)
    n_fg = fg.sum()
    if n_fg <= 0:
        raise ValueError("PxAP is undefined without foreground pixels in the evaluation set")
    tp = fg[::-1].cumsum()
    fp = bg[::-1].cumsum()
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = tp / n_fg
    return float(100.0 * (precision[1:] * np.diff(recall)).sum())


def chance_pxap(fg: np.ndarray, bg: np.ndarray) -> float:
    """PxAP of an all-ones map on the same pixels (every pixel in the bin of a score of 1), which
    equals the foreground fraction in percent. PxAP means nothing without it."""
    fg, bg = np.asarray(fg, dtype=np.float64), np.asarray(bg, dtype=np.float64)
    ones_fg, ones_bg = np.zeros_like(fg), np.zeros_like(bg)
    one = int(bin_index(torch.ones(1, dtype=torch.float64))[0])
    ones_fg[one], ones_bg[one] = fg.sum(), bg.sum()
    return pxap_from_histograms(ones_fg, ones_bg)


class PxAP(PixelHistogram):
    """Streaming PxAP: ``update(Batch(maps=..., masks=...))`` per batch, ``compute()`` -> PxAP in
    [0, 100], a float; like ``pxap_from_histograms`` it raises ``ValueError`` without foreground
    pixels. ``merge``/``sync`` are ``PixelHistogram``'s (summed counts).
    """

    def compute(self) -> float:  # type: ignore[override]
        return pxap_from_histograms(self.fg.cpu().numpy(), self.bg.cpu().numpy())
