"""The report's plots (each returns a PNG data URI): training curves, threshold curves, per-image
AP histograms and the experiments' figures (stain shift, t-SNE, threshold sensitivity)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from histocam.core.experiment_results import (
    StainShiftResult,
    ThresholdSensitivity,
    TsneResult,
)
from histocam.core.rundir import LABEL
from histocam.report.load import CheckpointResults, RunResults
from histocam.report.plots import LEGEND, figure_uri, legend_below, pyplot

SELECTION_STYLE = {"B-LOC": dict(color="k", linestyle="--", linewidth=1),
                   "B-CL": dict(color="0.5", linestyle=":", linewidth=1.5)}
#: The threshold curves: (attribute, label, style). TP(τ) is PxRec(τ) by definition: one curve.
CURVES = (("precision", "PxPrec", dict(color="k")),
          ("TP", "TP = PxRec", dict(color="tab:green")),
          ("FN", "FN", dict(color="tab:green", linestyle="--")),
          ("FP", "FP", dict(color="tab:red")),
          ("TN", "TN", dict(color="tab:red", linestyle="--")),
          ("dice_fg", "Dice FG", dict(color="tab:blue", linestyle=":", linewidth=2)))


def _column(log: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for row in log:
        value = row.get(key, "")
        if value not in ("", None):
            xs.append(int(row["epoch"]))
            ys.append(float(value))
    return np.array(xs), np.array(ys)


def training_curves(results: RunResults) -> str | None:
    """Loss parts, valcl accuracy and valpx PxAP per epoch, the B-LOC/B-CL epochs marked."""
    log = results.log
    if not log:
        return None
    losses = [k for k in log[0] if k.startswith("train_") and k != "train_accuracy"]
    plt = pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.2))
    colours = {}
    total = _column(log, "train_loss")[1]
    same = [k for k in losses if k != "train_loss" and np.array_equal(_column(log, k)[1], total)]
    for key in losses:
        x, y = _column(log, key)
        part = key.removesuffix("_chance")
        if not len(x) or key in same:  # a part that is the whole loss: one curve, named for both
            continue
        label = key.removeprefix("train_")
        if key == "train_loss" and same:
            label += " = " + " = ".join(k.removeprefix("train_") for k in same)
        if part != key and part in colours:  # a part's reference (pixel_chance: a head saying ½)
            ax_loss.plot(x, y, color=colours[part], linestyle=(0, (4, 2)), linewidth=1,
                         label=label)
        else:
            colours[key] = ax_loss.plot(x, y, marker=".", label=label)[0].get_color()
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("training loss (by part)", fontsize=10)
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for key, label in (("valcl_accuracy", "valcl accuracy (CL %)"), ("valpx_pxap", "valpx PxAP"),
                       ("train_accuracy", "train accuracy")):
        x, y = _column(log, key)
        if len(x):
            ax_val.plot(x, y, marker=".", label=label)
    ax_val.set_xlabel("epoch")
    ax_val.set_title("validation", fontsize=10)
    for ax in (ax_loss, ax_val):
        for which in ("B-LOC", "B-CL"):
            epoch = results.selected_epoch(which)
            if epoch is not None:
                ax.axvline(epoch, label=f"{which} (epoch {epoch})", **SELECTION_STYLE[which])
        legend_below(ax, ncol=2)
    return figure_uri(fig)


def threshold_curves(checkpoints: list[CheckpointResults]) -> str | None:
    """PxPrec, TP = PxRec, FN, FP, TN and FG Dice (%) vs τ at each checkpoint, τ* (valpx) marked
    (survey Fig. 8); one legend under the panels."""
    shown = [c for c in checkpoints if c.curves is not None]
    if not shown:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.2), squeeze=False)
    for ax, ckpt in zip(axes[0], shown):
        c = ckpt.curves
        every = slice(None, None, 5)  # 200 of the 1000 thresholds suffice to draw
        for key, label, style in CURVES:
            values = getattr(c, key)
            ax.plot(c.threshold[every], 100 * values[every], label=label,
                    **{"linewidth": 1.3, **style})
        title = LABEL.get(ckpt.checkpoint, ckpt.checkpoint)
        if ckpt.tau_star is not None:
            ax.axvline(ckpt.tau_star, color="0.4", linestyle="-.", linewidth=1, label="τ* (valpx)")
            title += f", τ* = {ckpt.tau_star:.3f}"
        ax.set_xlabel("threshold τ")
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()  # the same curves in every panel
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=7, **LEGEND)
    return figure_uri(fig)


def per_image_ap(checkpoints: list[CheckpointResults], class_names: list[str]) -> str | None:
    """Histogram of the per-image AP of each class (images with foreground) at each checkpoint."""
    shown = [c for c in checkpoints if any(not math.isnan(r.score("ap")) for r in c.per_image)]
    if not shown:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3), squeeze=False)
    bins = np.linspace(0, 100, 21)
    for ax, ckpt in zip(axes[0], shown):
        for label in sorted({r.label for r in ckpt.per_image}):
            values = [r.ap for r in ckpt.per_image
                      if r.label == label and not math.isnan(r.score("ap"))]
            if values:
                name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
                ax.hist(values, bins=bins, alpha=0.6,
                        label=f"{name} (n={len(values)}, mean {np.mean(values):.1f})")
        ax.set_xlabel("per-image AP")
        ax.set_ylabel("images")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(LABEL.get(ckpt.checkpoint, ckpt.checkpoint), fontsize=10)
        legend_below(ax, ncol=1)
    return figure_uri(fig)


def stain_shift(curves: list[tuple[str, StainShiftResult]]) -> str:
    """PxAP and CL vs stain-shift level, one line per (run, checkpoint) (PixelCAM Figs. 4/5)."""
    plt = pyplot()
    fig, (ax_cl, ax_px) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, data in curves:
        levels = data.levels
        for ckpt, values in data.checkpoints.items():
            label = f"{name} {LABEL.get(ckpt, ckpt)}"
            ax_cl.plot(levels, values.accuracy, marker=".", label=label)
            pxap = [np.nan if v is None else v for v in values.pxap]
            ax_px.plot(levels, pxap, marker=".", label=label)
    for ax, title in ((ax_cl, "classification (CL %)"), (ax_px, "localisation (PxAP)")):
        ax.set_xlabel("stain-shift level (0 = original)")
        ax.set_title(title, fontsize=10)
        legend_below(ax, ncol=2)
    return figure_uri(fig)


def tsne(data: TsneResult, title: str) -> str | None:
    """One panel per image: its FG (red) and BG (blue) feature-grid cells after t-SNE, with J."""
    images = data.images
    if not images:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.8), squeeze=False)
    for ax, item in zip(axes[0], images):
        points = np.asarray(item.points, dtype=float)
        fg = np.asarray(item.fg, dtype=bool)
        ax.scatter(points[~fg, 0], points[~fg, 1], s=8, c="tab:blue", label="BG")
        ax.scatter(points[fg, 0], points[fg, 1], s=8, c="tab:red", label="FG")
        ax.set_title(f"{item.class_name} J={item.j:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", ncol=2,
               bbox_to_anchor=(1.0, 1.12), **LEGEND)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    return figure_uri(fig)


def threshold_sensitivity(curves: list[tuple[str, ThresholdSensitivity]]) -> str:
    """Share of pixels with a score ≥ τ (all, FG, BG) and FG Dice vs τ, one line per run, and the
    share of pixels above 0.5 against PxAP across runs (survey Fig. 8)."""
    plt = pyplot()
    fig, (ax_share, ax_dice, ax_scatter) = plt.subplots(1, 3, figsize=(13, 3.4))
    for name, c in curves:
        line, = ax_share.plot(c.thresholds, c.share_all, label=f"{name} all")
        ax_share.plot(c.thresholds, c.share_fg, color=line.get_color(), linestyle="--",
                      linewidth=0.8)
        ax_share.plot(c.thresholds, c.share_bg, color=line.get_color(), linestyle=":",
                      linewidth=0.8)
        ax_dice.plot(c.thresholds, c.dice_fg, label=name)
        ax_scatter.scatter([c.share_all_at_half], [c.pxap], label=name)
    ax_share.set_title("pixels with score ≥ τ (%): all, FG --, BG ··", fontsize=10)
    ax_dice.set_title("FG Dice at τ (%)", fontsize=10)
    ax_scatter.set_title("share ≥ 0.5 vs PxAP", fontsize=10)
    ax_scatter.set_xlabel("pixels ≥ 0.5 (%)")
    ax_scatter.set_ylabel("PxAP")
    for ax in (ax_share, ax_dice):
        ax.set_xlabel("threshold τ")
    for ax in (ax_share, ax_dice, ax_scatter):
        legend_below(ax, ncol=1)
    return figure_uri(fig)
