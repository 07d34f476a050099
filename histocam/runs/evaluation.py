"""``histocam evaluate RUN [--data OTHER]``: test metrics of a run's checkpoints.

For each checkpoint: τ* = argmax mIoU on the run's own valpx (never on test; on other data too, as
an out-of-distribution user would have no pixel labels there) -> test pass with accuracy, PxAP, area
rates, operating points, per-image scores at τ*. Writes ``metrics/[<data tag>/]<ckpt>-<split>.json``,
``...-per-image.csv``, ``...-curves.{csv,png}`` and optionally the maps (``...-maps.npz``, float16,
streamed) under the run directory; the data tag names another dataset (``Run.data_tag``).

Under torchrun (``torchrun --nproc_per_node N -m histocam evaluate RUN``) each rank evaluates its
block of valpx and of the split, the metrics are merged through the metric protocol and rank 0
alone writes: the same files as one process (the maps merged from the ranks' parts in order).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from histocam.core import collectives
from histocam.core.collectives import distributed_ready
from histocam.core.devices import command_device
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.maps.store import ShardedNpzWriter
from histocam.metrics.confusion import best_threshold
from histocam.metrics.localization import localization_report, write_threshold_curves
from histocam.metrics.pxap import chance_pxap, pxap_from_histograms
from histocam.metrics.separability import SeparabilityIndex
from histocam.train.loader import make_loader
from histocam.train.split_pass import SplitResult, evaluate_split

if TYPE_CHECKING:
    from histocam.runs.run import Run

PER_IMAGE_FIELDS = ["id", "label", "prediction", "confidence", "ap", "dice_fg", "dice_bg", "iou_fg",
                    "iou_bg", "fg_fraction"]


class DataMismatchError(ValueError):
    """Other data whose classes cannot be scored by the run's classifier."""


def evaluate_run(run: Run, checkpoint: str, split: str = "test", *,
                 data: str | Path | DataConfig | None = None, device: str = "auto",
                 save_maps: bool = False, separability: bool = False) -> dict:
    """The metrics of ``checkpoint`` on ``split`` (written under the run, and returned).

    Under torchrun (a collective: every rank calls it) the images of valpx and of ``split`` are
    shared out over the ranks (``shard=True``), every metric is merged through the metric protocol
    and rank 0 alone writes the files (the other ranks wait for it); every rank returns the same
    metrics. It joins the job's process group, making it on first use (``collectives.setup``)."""
    dev = command_device(device)
    collectives.setup(dev)
    method, class_names = run.method(checkpoint, str(dev))
    t = run.config.train
    kwargs = dict(batch_size=t.eval_batch_size, num_workers=t.num_workers, shard=True)
    own = open_source(run.config.data)
    valpx = evaluate_split(method, own.dataset("valpx"), run.config.data, dev, **kwargs)
    tau_source = "valpx" if valpx.pxap is not None else "none"
    tau = best_threshold(valpx.histogram) if valpx.pxap is not None else None
    data_config = run.data_config(data)
    tag = run.data_tag(data)
    source = own if tag is None else open_source(data_config)
    if len(source.class_names) != len(class_names):
        raise DataMismatchError(
            f"{data_config.dataset}: {len(source.class_names)} classes "
            f"({', '.join(source.class_names)}), the run's classifier has {len(class_names)} "
            f"({', '.join(class_names)})")
    out_dir = run.dir / "metrics" / (tag or "")
    stem = f"{checkpoint}-{split}"
    writer = ShardedNpzWriter(out_dir / f"{stem}-maps.npz") if save_maps else None
    try:
        result = evaluate_split(method, source.dataset(split), data_config, dev, **kwargs,
                                tau=tau if tau is not None else 0.5,
                                map_sink=(lambda i, m: writer.add(i, m.half().numpy()))
                                if writer else None)
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer:
        writer.close()  # rank 0 writes the one store
    metrics: dict = {"run": str(run.dir), "checkpoint": checkpoint, "split": split,
                     "method": run.config.method.name, "data": data_config.dataset,
                     "classification": result.accuracy.compute()}
    if tag is not None:
        metrics["class_names"] = {"run": class_names, "data": source.class_names,
                                  "mapping": "by index"}
    if result.pxap is not None:
        metrics["localization"] = localization_report(
            result.histogram, valpx.histogram if tau is not None else None)
        metrics["localization"]["tau_star_source"] = tau_source
        # without foreground in valpx there is no τ*: per-image scores are then at 0.5, and say so
        key = "per_image_mean_at_tau_star" if tau is not None else "per_image_mean_at_0.5"
        metrics["localization"][key] = {
            k: result.per_image.mean(k) for k in ("ap", "dice_fg", "dice_bg", "iou_fg", "iou_bg")}
        metrics["localization"]["per_class"] = per_class(result, source.class_names)
    if separability:
        metrics["separability"] = _separability(method, source.dataset(split), data_config, dev,
                                                source.class_names, t.eval_batch_size)
    if collectives.is_main():
        _write(out_dir, stem, metrics, result, f"{run.config.method.name} {checkpoint} {split}")
    collectives.barrier()  # the files exist before any rank goes on (e.g. to read them)
    return metrics


def _write(out_dir: Path, stem: str, metrics: dict, result: SplitResult, title: str) -> None:
    """The evaluation's files: curves (with localisation), per-image CSV, metrics JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if "localization" in metrics:
        write_threshold_curves(result.histogram, out_dir / f"{stem}-curves.csv",
                               out_dir / f"{stem}-curves.png", title=title)
    per_image = {row["id"]: row for row in (result.per_image.rows if result.per_image else [])}
    with (out_dir / f"{stem}-per-image.csv").open("w", newline="") as fh:
        writer_csv = csv.DictWriter(fh, fieldnames=PER_IMAGE_FIELDS, extrasaction="ignore")
        writer_csv.writeheader()
        for row in result.predictions:
            writer_csv.writerow({**row, **per_image.get(row["id"], {})})
    (out_dir / f"{stem}.json").write_text(json.dumps(metrics, indent=2))


def per_class(result: SplitResult, class_names: list[str]) -> dict:
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


def _separability(method, dataset, data_config, device, class_names, batch_size) -> dict:
    """J over ``dataset``; under torchrun each rank takes its block of the images and the values
    are merged in rank order (= dataset order) through ``Metric.sync`` (a collective)."""
    acc = SeparabilityIndex(class_names)
    indices = collectives.shard_indices(len(dataset)) if distributed_ready() else None
    loader = make_loader(dataset, JointTransform.from_config(data_config, train=False), batch_size,
                         shuffle=False, num_workers=0, indices=indices)
    with torch.no_grad():
        for batch in loader:
            has = batch["has_mask"]
            if not bool(has.any()):
                continue
            features = method(batch["image"][has].to(device)).features[-1]
            acc.update(features, batch["mask"][has].to(device), batch["label"][has])
    return acc.sync().compute()
