"""``histocam evaluate RUN [--data OTHER]``: test metrics of a run's checkpoints.

For each checkpoint: τ* = argmax mIoU on the run's own valpx (never on test; on other data too, as
an out-of-distribution user would have no pixel labels there) -> test pass with accuracy, PxAP, area
rates, operating points, per-image scores at τ*. The result is an ``EvaluationResult``, written
with the per-image CSV, the threshold curves (CSV, PNG) and optionally the maps (float16, streamed)
to the run's ``RunDir.evaluation`` files; evaluations on another dataset go under its data tag
(``Run.data_tag``).

Under torchrun (``torchrun --nproc_per_node N -m histocam evaluate RUN``) each rank evaluates its
block of valpx and of the split, the metrics are merged through the metric protocol and rank 0
alone writes: the same files as one process (the maps merged from the ranks' parts in order).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from histocam.core import collectives
from histocam.core.collectives import distributed_ready
from histocam.core.devices import command_device
from histocam.core.results import (
    ClassLocalization,
    ClassMapping,
    EvaluationResult,
    PerImageMeans,
    PerImageRow,
    Separability,
)
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


class DataMismatchError(ValueError):
    """Other data whose classes cannot be scored by the run's classifier."""


def evaluate_run(run: Run, checkpoint: str, split: str = "test", *,
                 data: str | Path | DataConfig | None = None, device: str = "auto",
                 save_maps: bool = False, separability: bool = False) -> EvaluationResult:
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
    files = run.dir.evaluation(checkpoint, split, tag)
    writer = ShardedNpzWriter(files.maps) if save_maps else None
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
    localization = None
    if result.pxap is not None:
        means = PerImageMeans(**{k: result.per_image.mean(k)
                                 for k in ("ap", "dice_fg", "dice_bg", "iou_fg", "iou_bg")})
        # without foreground in valpx there is no τ*: per-image scores are then at 0.5, and say so
        localization = localization_report(
            result.histogram, valpx.histogram if tau is not None else None,
            tau_star_source=tau_source,
            per_image_mean_at_tau_star=means if tau is not None else None,
            per_image_mean_at_half=None if tau is not None else means,
            per_class=per_class(result, source.class_names))
    separability_result = None
    if separability:
        separability_result = _separability(method, source.dataset(split), data_config, dev,
                                            source.class_names, t.eval_batch_size)
    evaluation = EvaluationResult(
        run=str(run.dir), checkpoint=checkpoint, split=split, method=run.config.method.name,
        data=data_config.dataset, classification=result.accuracy.compute(),
        class_names=(ClassMapping(run=class_names, data=source.class_names)
                     if tag is not None else None),
        localization=localization, separability=separability_result)
    if collectives.is_main():
        _write(run, tag, evaluation, result)
    collectives.barrier()  # the files exist before any rank goes on (e.g. to read them)
    return evaluation


def _write(run: Run, tag: str | None, evaluation: EvaluationResult, result: SplitResult) -> None:
    """The evaluation's files: curves (with localisation), per-image CSV, the result's JSON."""
    files = run.dir.evaluation(evaluation.checkpoint, evaluation.split, tag)
    if evaluation.localization is not None:
        title = f"{evaluation.method} {evaluation.checkpoint} {evaluation.split}"
        write_threshold_curves(result.histogram, files.curves_csv, files.curves_png, title=title)
    scores = {row["id"]: row for row in (result.per_image.rows if result.per_image else [])}
    rows = [PerImageRow(**{**p, **scores.get(p["id"], {})}) for p in result.predictions]
    run.dir.write_per_image(evaluation.checkpoint, evaluation.split, rows, tag)
    run.dir.write_evaluation(evaluation, tag)


def per_class(result: SplitResult, class_names: list[str]) -> dict[str, ClassLocalization]:
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
        out[class_names[c]] = ClassLocalization(
            pxap=pxap_from_histograms(fg, bg), chance=chance_pxap(fg, bg),
            n_images=hist.n_images,
            mean_image_ap=float(np.mean([r["ap"] for r in mine])) if mine else None,
            mean_fg_fraction=(float(100 * np.mean([r["fg_fraction"] for r in mine]))
                              if mine else None))
    return out


def _separability(method, dataset, data_config, device, class_names, batch_size) -> Separability:
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
