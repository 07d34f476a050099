"""Pixel confusion rates over thresholds (survey eqs. 17–24) and operating points.

Per threshold τ: TP(τ) = |s ≥ τ ∩ T=1| / |T=1|, FN = 1 − TP, FP(τ) = |s ≥ τ ∩ T=0| / |T=0|,
TN = 1 − FP. The "area" rates TP*, FN*, FP*, TN* (eqs. 21–24) are 100 × the area under each curve;
with the fixed step of 0.001 that is 100 × their mean over the 1000 thresholds.
The operating threshold τ* = argmax_τ mIoU(τ), mIoU = ½(IoU_fg + IoU_bg), must be chosen on the
B-LOC set (valpx) and applied to test (docs/protocol.md, "Metrics"); the test set's own argmax is
an oracle.
F1⁺/F1⁻ are the foreground/background Dice (Max-Min paper eqs. 14–15), here pooled over pixels.
"""

from __future__ import annotations

import numpy as np

from histocam.metrics.histogram import THRESHOLDS, PixelHistogram


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def curves(hist: PixelHistogram) -> dict[str, np.ndarray]:
    """Every per-threshold quantity, arrays aligned with ``THRESHOLDS``."""
    c = hist.counts()
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    iou_fg, iou_bg = _safe(tp, tp + fp + fn), _safe(tn, tn + fn + fp)
    return {
        "threshold": THRESHOLDS,
        "TP": _safe(tp, tp + fn), "FN": _safe(fn, tp + fn),
        "FP": _safe(fp, fp + tn), "TN": _safe(tn, fp + tn),
        "precision": _safe(tp, tp + fp), "recall": _safe(tp, tp + fn),
        "iou_fg": iou_fg, "iou_bg": iou_bg, "miou": 0.5 * (iou_fg + iou_bg),
        "dice_fg": _safe(2 * tp, 2 * tp + fp + fn), "dice_bg": _safe(2 * tn, 2 * tn + fp + fn),
    }


def area_rates(hist: PixelHistogram) -> dict[str, float]:
    """TP*, FN*, FP*, TN* in percent (survey eqs. 21–24)."""
    c = curves(hist)
    return {f"{k}*": float(100.0 * c[k].mean()) for k in ("TP", "FN", "FP", "TN")}


def best_threshold(hist: PixelHistogram) -> float:
    """τ* = the threshold maximising mIoU on this histogram (the lowest τ on ties)."""
    return float(THRESHOLDS[int(np.argmax(curves(hist)["miou"]))])


def threshold_index(tau: float) -> int:
    """Index of the largest threshold ≤ τ (τ = 0.5 -> 500)."""
    i = int(np.searchsorted(THRESHOLDS, tau, side="right")) - 1
    if i < 0:
        raise ValueError(f"threshold {tau} is below 0")
    return i


def at_threshold(hist: PixelHistogram, tau: float) -> dict[str, float]:
    """Rates (percent) and IoU/Dice at one operating threshold."""
    c = curves(hist)
    i = threshold_index(tau)
    keys = ("TP", "FN", "FP", "TN", "miou", "iou_fg", "iou_bg", "dice_fg", "dice_bg")
    out = {k: float(100.0 * c[k][i]) for k in keys}
    out["threshold"] = float(THRESHOLDS[i])
    return out
