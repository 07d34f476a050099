"""``histocam evaluate RUN``: test metrics of a run's B-LOC and/or B-CL checkpoints.

For each checkpoint: τ* = argmax mIoU on valpx (never on test) -> test pass with accuracy, PxAP,
area rates, operating points, per-image scores at τ*; writes ``metrics/<ckpt>-<split>.json``,
``<ckpt>-<split>-per-image.csv``, ``<ckpt>-<split>-curves.{csv,png}`` and optionally the maps
(``<ckpt>-<split>-maps.npz``, float16) under the run directory.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from histocam.metrics.pxap import chance_pxap, pxap_from_histograms
from histocam.metrics.report import localization_report, write_threshold_curves
from histocam.metrics.separability import SeparabilityIndex
from histocam.train.evaluate import evaluate_split
from histocam.train.loader import make_loader
from histocam.train.seeding import resolve_device
from histocam.train.trainer import load_method


def _separability(method, dataset, data_config, device, class_names, batch_size) -> dict:
    from histocam.data.transforms import JointTransform

    acc = SeparabilityIndex(class_names)
    loader = make_loader(dataset, JointTransform.from_config(data_config, train=False), batch_size,
                         shuffle=False, num_workers=0)
    with torch.no_grad():
        for batch in loader:
            has = batch["has_mask"]
            if not bool(has.any()):
                continue
            features = method(batch["image"][has].to(device)).features[-1]
            acc.update(features, batch["mask"][has].to(device), batch["label"][has])
    return acc.compute()


def evaluate_checkpoint(run_dir: Path, checkpoint: str, split: str = "test", *,
                        device: str = "auto", save_maps: bool = False,
                        separability: bool = False, batch_size: int = 32) -> dict:
    from histocam.data.open import open_source

    dev = resolve_device(device)
    method, config, class_names = load_method(run_dir, checkpoint, str(dev))
    source = open_source(config.data)
    valpx = evaluate_split(method, source.dataset("valpx"), config.data, dev,
                           batch_size=batch_size)
    from histocam.metrics.confusion import best_threshold

    tau = best_threshold(valpx.histogram) if valpx.pxap is not None else 0.5
    result = evaluate_split(method, source.dataset(split), config.data, dev, batch_size=batch_size,
                            tau=tau, keep_maps=save_maps)
    out_dir = Path(run_dir) / "metrics"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{checkpoint}-{split}"
    metrics: dict = {"run": str(run_dir), "checkpoint": checkpoint, "split": split,
                     "method": config.method.name, "classification": result.accuracy.compute()}
    if result.pxap is not None:
        metrics["localization"] = localization_report(result.histogram, valpx.histogram
                                                      if valpx.pxap is not None else None)
        metrics["localization"]["per_image_mean_at_tau_star"] = {
            k: result.per_image.mean(k) for k in ("ap", "dice_fg", "dice_bg", "iou_fg", "iou_bg")}
        metrics["localization"]["per_class"] = _per_class(result, class_names)
        write_threshold_curves(result.histogram, out_dir / f"{stem}-curves.csv",
                               out_dir / f"{stem}-curves.png",
                               title=f"{config.method.name} {checkpoint} {split}")
    if separability:
        metrics["separability"] = _separability(method, source.dataset(split), config.data, dev,
                                                class_names, batch_size)
    per_image = {row["id"]: row for row in (result.per_image.rows if result.per_image else [])}
    with (out_dir / f"{stem}-per-image.csv").open("w", newline="") as fh:
        keys = ["id", "label", "prediction", "confidence", "ap", "dice_fg", "dice_bg", "iou_fg",
                "iou_bg", "fg_fraction"]
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in result.predictions:
            writer.writerow({**row, **per_image.get(row["id"], {})})
    if save_maps:
        np.savez_compressed(out_dir / f"{stem}-maps.npz",
                            **{_safe_key(k): v.numpy() for k, v in result.maps.items()})
    (out_dir / f"{stem}.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _per_class(result, class_names: list[str]) -> dict:
    """PxAP and its chance level on each class's images, and the mean per-image AP next to the
    mean foreground fraction (the per-image chance level): glands are foreground in both GlaS
    classes, so a map must localise in each class, not only on average."""
    labels = {row["id"]: row["label"] for row in result.predictions}
    rows = result.per_image.rows if result.per_image else []
    out = {}
    for c, hist in sorted(result.by_class.items()):
        if int(hist.fg.sum()) == 0:
            continue
        mine = [r for r in rows if labels.get(r["id"]) == c and r["ap"] == r["ap"]]  # not NaN
        fg, bg = hist.fg.cpu().numpy(), hist.bg.cpu().numpy()
        out[class_names[c]] = {
            "pxap": pxap_from_histograms(fg, bg), "chance": chance_pxap(fg, bg),
            "n_images": hist.n_images,
            "mean_image_ap": float(np.mean([r["ap"] for r in mine])) if mine else None,
            "mean_fg_fraction": (float(100 * np.mean([r["fg_fraction"] for r in mine]))
                                 if mine else None),
        }
    return out


def _safe_key(image_id: str) -> str:
    return image_id.replace("/", "__")
