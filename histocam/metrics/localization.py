"""One localisation report: PxAP, area rates, operating points chosen on valpx, curves on disk."""

from __future__ import annotations

import csv
from pathlib import Path

from histocam.metrics.confusion import area_rates, at_threshold, best_threshold, curves
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.pxap import chance_pxap, pxap_from_histograms

ORACLE_NOTE = ("threshold chosen on the evaluated set itself (what the reference code reported); an "
               "oracle, not a valid result")


def localization_report(test: PixelHistogram, valpx: PixelHistogram | None = None) -> dict:
    """Metrics of ``test``; τ* = argmax mIoU on ``valpx`` (never on test) when valpx is given."""
    report: dict = {
        "pxap": pxap_from_histograms(test.fg.cpu().numpy(), test.bg.cpu().numpy()),
        "chance": chance_pxap(test.fg.cpu().numpy(), test.bg.cpu().numpy()),
        "n_images": test.n_images,
        "n_fg_pixels": int(test.fg.sum()), "n_bg_pixels": int(test.bg.sum()),
        **area_rates(test),
        "at_0.5": at_threshold(test, 0.5),
    }
    if valpx is not None:
        tau = best_threshold(valpx)
        report["tau_star_valpx"] = tau
        report["at_tau_star_valpx"] = at_threshold(test, tau)
    oracle = best_threshold(test)
    report["oracle_test_tau"] = {"note": ORACLE_NOTE, **at_threshold(test, oracle)}
    return report


def write_threshold_curves(hist: PixelHistogram, csv_path: Path, png_path: Path | None = None,
                           title: str = "") -> None:
    """PxPrec, PxRec, TP, FN, FP, TN vs τ (the survey's Fig. 8) as CSV and optionally PNG."""
    c = curves(hist)
    keys = ["threshold", "precision", "recall", "TP", "FN", "FP", "TN", "miou", "dice_fg", "dice_bg"]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for i in range(len(c["threshold"])):
            writer.writerow([f"{c[k][i]:.6g}" for k in keys])
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("precision", "PxPrec"), ("recall", "PxRec"), ("TP", "TP"), ("FN", "FN"),
                       ("FP", "FP"), ("TN", "TN")):
        ax.plot(c["threshold"], 100 * c[key], label=label)
    ax.set_xlabel("threshold τ")
    ax.set_ylabel("%")
    ax.set_title(title or "threshold sensitivity")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
