"""One localisation report: PxAP, area rates, operating points chosen on valpx, curves on disk."""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from histocam.core.results import Localization
from histocam.metrics.confusion import area_rates, at_threshold, best_threshold, curves
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.pxap import chance_pxap, pxap_from_histograms

ORACLE_NOTE = ("threshold chosen on the evaluated set itself (what the reference code reported); an "
               "oracle, not a valid result")


def localization_report(test: PixelHistogram, valpx: PixelHistogram | None = None,
                        **extra: Any) -> Localization:
    """Metrics of ``test``; τ* = argmax mIoU on ``valpx`` (never on test) when valpx is given.
    ``extra``: the report's other fields (per class, per-image means, ...)."""
    tau = best_threshold(valpx) if valpx is not None else None
    fg, bg = test.fg.cpu().numpy(), test.bg.cpu().numpy()
    return Localization(
        pxap=pxap_from_histograms(fg, bg), chance=chance_pxap(fg, bg), n_images=test.n_images,
        n_fg_pixels=int(test.fg.sum()), n_bg_pixels=int(test.bg.sum()), **area_rates(test),
        at_half=at_threshold(test, 0.5), tau_star_valpx=tau,
        at_tau_star_valpx=at_threshold(test, tau) if tau is not None else None,
        oracle_test_tau={"note": ORACLE_NOTE, **at_threshold(test, best_threshold(test))},
        **extra)


@dataclass(frozen=True)
class ThresholdCurves:
    """Every quantity of ``histocam.metrics.confusion.curves`` at the 1000 thresholds, as stored
    beside an evaluation (fractions in [0, 1]; ``threshold`` = τ)."""

    threshold: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    TP: np.ndarray
    FN: np.ndarray
    FP: np.ndarray
    TN: np.ndarray
    miou: np.ndarray
    dice_fg: np.ndarray
    dice_bg: np.ndarray

    @classmethod
    def of(cls, hist: PixelHistogram) -> ThresholdCurves:
        """The curves of a histogram (``histocam.metrics.confusion.curves``)."""
        c = curves(hist)
        return cls(**{f.name: c[f.name] for f in fields(cls)})


CURVE_COLUMNS = [f.name for f in fields(ThresholdCurves)]


def write_threshold_curves(hist: PixelHistogram, csv_path: Path, png_path: Path | None = None,
                           title: str = "") -> None:
    """PxPrec, PxRec, TP, FN, FP, TN vs τ (the survey's Fig. 8) as CSV and optionally PNG (TP and
    PxRec, equal by definition, as one curve)."""
    c = curves(hist)
    keys = CURVE_COLUMNS
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for i in range(len(c["threshold"])):
            writer.writerow([f"{c[k][i]:.6g}" for k in keys])
    if png_path is None:
        return
    png_path.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    # TP(τ) is PxRec(τ) by definition: one curve; each rate its own colour and line style
    for key, label, style in (("precision", "PxPrec", dict(color="k")),
                              ("TP", "TP = PxRec", dict(color="tab:green")),
                              ("FN", "FN", dict(color="tab:green", linestyle="--")),
                              ("FP", "FP", dict(color="tab:red")),
                              ("TN", "TN", dict(color="tab:red", linestyle="--"))):
        ax.plot(c["threshold"], 100 * c[key], label=label, **style)
    ax.set_xlabel("threshold τ")
    ax.set_ylabel("%")
    ax.set_title(title or "threshold sensitivity")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=5, fontsize=9, frameon=False)
    fig.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def read_threshold_curves(path: Path) -> ThresholdCurves | None:
    """The curves written by ``write_threshold_curves`` (None: no such file, or an empty one)."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    missing = [k for k in CURVE_COLUMNS if k not in rows[0]]
    if missing:
        raise ValueError(f"{path}: not a threshold-curves CSV (no column {', '.join(missing)})")
    return ThresholdCurves(**{k: np.array([_float(r[k]) for r in rows]) for k in CURVE_COLUMNS})


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else float("nan")
    except ValueError:
        return float("nan")
