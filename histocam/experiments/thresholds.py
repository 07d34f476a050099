"""Threshold sensitivity (survey Fig. 8, Sec. 4.2): how much of the image a map switches on at each
threshold τ, next to the localisation it gives there and its PxAP.

For the test pixels of annotated images: share_fg(τ) = TP(τ) (foreground pixels with score ≥ τ),
share_bg(τ) = FP(τ), share_all(τ) = (n_fg·TP(τ) + n_bg·FP(τ)) / (n_fg + n_bg) (survey eqs. 17–20), in
percent, with the FG Dice and mIoU at τ. A map whose shares collapse right after τ = 0 has its
activation mode near zero, the threshold sensitivity the survey describes. Read from the stored
threshold curves of ``histocam evaluate`` (evaluated first where missing or older than the
checkpoint); the ``ThresholdsResult`` is stored with the run (``RunDir.experiment``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histocam.core.experiment_results import ThresholdSensitivity, ThresholdsResult
from histocam.core.progress import Stages
from histocam.core.rundir import LABEL, SELECTED
from histocam.metrics.localization import ThresholdCurves, read_threshold_curves
from histocam.runs.run import Run

THRESHOLDS_DEFINITION = ("share of the annotated test pixels whose score is ≥ τ (all; FG = TP(τ); BG = "
                         "FP(τ)), with FG Dice and mIoU at τ, from the stored threshold curves")
STEP = 10  # every 10th of the protocol's 1000 thresholds: τ = 0, 0.01, ..., 0.99


def sensitivity(curves: ThresholdCurves, n_fg: int, n_bg: int, *, pxap: float,
                tau_star: float | None, step: int = STEP) -> ThresholdSensitivity:
    """Shares of pixels with score ≥ τ (percent) from threshold curves (fractions, as
    ``histocam.metrics.confusion.curves`` gives them) and the pixel counts; at τ* too when the
    evaluation chose one."""
    if n_fg + n_bg == 0:
        raise ValueError("no annotated pixels: threshold sensitivity needs masks")
    tp, fp = np.asarray(curves.TP, float), np.asarray(curves.FP, float)
    share_all = 100.0 * (n_fg * tp + n_bg * fp) / (n_fg + n_bg)
    pick = slice(None, None, step)
    thresholds = np.asarray(curves.threshold)
    half = int(np.argmin(np.abs(thresholds - 0.5)))
    at_tau = None
    if tau_star is not None:
        i = int(np.argmin(np.abs(curves.threshold - tau_star)))
        at_tau = float(100.0 * (n_fg * curves.TP[i] + n_bg * curves.FP[i]) / (n_fg + n_bg))
    return ThresholdSensitivity(
        thresholds=[round(float(v), 6) for v in thresholds[pick]],
        share_all=share_all[pick].tolist(), share_fg=(100.0 * tp[pick]).tolist(),
        share_bg=(100.0 * fp[pick]).tolist(),
        dice_fg=(100.0 * np.asarray(curves.dice_fg, float)[pick]).tolist(),
        miou=(100.0 * np.asarray(curves.miou, float)[pick]).tolist(),
        share_all_at_half=float(share_all[half]), pxap=pxap, tau_star=tau_star,
        share_all_at_tau_star=at_tau)


def run_thresholds(run_dir: str | Path, *, split: str = "test", device: str = "auto") -> Path:
    """Store the threshold sensitivity of both selected checkpoints with the run; returns the
    path written."""
    run = Run(run_dir)
    with run.writing("thresholds", device):  # the run's lock, until the result is written
        return _thresholds(run, split, device)


def _thresholds(run: Run, split: str, device: str) -> Path:
    entries = {}
    stages = Stages(len(SELECTED))
    for ckpt in SELECTED:
        current = run.dir.evaluation_is_current(ckpt, split)
        stages.next(f"{run.dir.name} {LABEL[ckpt]}: " + ("the stored evaluation" if current else
                                                         f"evaluating on {split}"))
        result = run.evaluation(ckpt, split, device=device)
        curves = read_threshold_curves(run.dir.evaluation(ckpt, split).curves_csv)
        if curves is None and result.localization is not None:  # the curves alone are missing
            result = run.require_trained().evaluate(ckpt, split, device=device)
            curves = read_threshold_curves(run.dir.evaluation(ckpt, split).curves_csv)
        loc = result.localization
        if loc is None or curves is None:
            raise ValueError(f"{run.dir}: the {split} split has no pixel annotations: no threshold "
                             "sensitivity")
        entries[ckpt] = sensitivity(curves, loc.n_fg_pixels, loc.n_bg_pixels, pxap=loc.pxap,
                                    tau_star=loc.tau_star_valpx)
    result = ThresholdsResult(definition=THRESHOLDS_DEFINITION, split=split, checkpoints=entries)
    return result.write(run.dir.experiment("thresholds"))
