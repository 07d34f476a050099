"""Threshold sensitivity (survey Fig. 8, Sec. 4.2): how much of the image a map switches on at each
threshold τ, next to the localisation it gives there and its PxAP.

For the test pixels of annotated images: share_fg(τ) = TP(τ) (foreground pixels with score ≥ τ),
share_bg(τ) = FP(τ), share_all(τ) = (n_fg·TP(τ) + n_bg·FP(τ)) / (n_fg + n_bg) (survey eqs. 17–20), in
percent, with the FG Dice and mIoU at τ. A map whose shares collapse right after τ = 0 has its
activation mode near zero, the threshold sensitivity the survey describes. Read from the stored
threshold curves of ``histocam evaluate`` (evaluated first where missing); written to
``RUN/metrics/thresholds.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from histocam.report import files
from histocam.report.load import read_curves, read_json
from histocam.runs.run import Run

THRESHOLDS_DEFINITION = ("share of the annotated test pixels whose score is ≥ τ (all; FG = TP(τ); BG = "
                         "FP(τ)), with FG Dice and mIoU at τ, from the stored threshold curves")
STEP = 10  # every 10th of the protocol's 1000 thresholds: τ = 0, 0.01, ..., 0.99


def sensitivity(curves: dict[str, np.ndarray], n_fg: int, n_bg: int, step: int = STEP) -> dict:
    """Shares of pixels with score ≥ τ (percent) from threshold curves (fractions, as
    ``histocam.metrics.confusion.curves`` gives them) and the pixel counts."""
    if n_fg + n_bg == 0:
        raise ValueError("no annotated pixels: threshold sensitivity needs masks")
    tp, fp = np.asarray(curves["TP"], float), np.asarray(curves["FP"], float)
    share_all = 100.0 * (n_fg * tp + n_bg * fp) / (n_fg + n_bg)
    pick = slice(None, None, step)
    half = int(np.argmin(np.abs(np.asarray(curves["threshold"]) - 0.5)))
    return {
        "thresholds": [round(float(v), 6) for v in np.asarray(curves["threshold"])[pick]],
        "share_all": share_all[pick].tolist(), "share_fg": (100.0 * tp[pick]).tolist(),
        "share_bg": (100.0 * fp[pick]).tolist(),
        "dice_fg": (100.0 * np.asarray(curves["dice_fg"], float)[pick]).tolist(),
        "miou": (100.0 * np.asarray(curves["miou"], float)[pick]).tolist(),
        "share_all_at_0.5": float(share_all[half]),
    }


def run_thresholds(run_dir: str | Path, *, split: str = "test", device: str = "auto") -> Path:
    """Write and return ``RUN/metrics/thresholds.json`` for both selected checkpoints."""
    run = Run(run_dir)
    out: dict = {"definition": THRESHOLDS_DEFINITION, "split": split,
                 "checkpoints": {}}
    for ckpt in files.SELECTED:
        stored = files.metrics_json(run.dir, ckpt, split)
        metrics = read_json(stored)
        curves = read_curves(files.curves_csv(run.dir, ckpt, split))
        weights = run.checkpoint_path(ckpt)
        stale = metrics is not None and weights.is_file() and \
            stored.stat().st_mtime < weights.stat().st_mtime  # evaluated before a retrain/resume
        if metrics is None or curves is None or stale:
            run.require_trained()
            metrics = run.evaluate(ckpt, split, device=device)
            curves = read_curves(files.curves_csv(run.dir, ckpt, split))
        loc = metrics.get("localization")
        if not loc or curves is None:
            raise ValueError(f"{run.dir}: the {split} split has no pixel annotations: no threshold "
                             "sensitivity")
        tau = loc.get("tau_star_valpx")
        entry = sensitivity(curves, loc["n_fg_pixels"], loc["n_bg_pixels"])
        entry.update(pxap=loc["pxap"], tau_star=tau)
        if tau is not None:
            i = int(np.argmin(np.abs(curves["threshold"] - tau)))
            entry["share_all_at_tau_star"] = float(
                100.0 * (loc["n_fg_pixels"] * curves["TP"][i] + loc["n_bg_pixels"] * curves["FP"][i])
                / (loc["n_fg_pixels"] + loc["n_bg_pixels"]))
        out["checkpoints"][ckpt] = entry
    path = files.experiment_json(run.dir, files.THRESHOLDS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return path
