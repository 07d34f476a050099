"""Evaluate a method on a split: classification accuracy and protocol localisation metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from histocam.core.collectives import all_gather_objects, distributed_ready, shard_indices
from histocam.data.config import DataConfig
from histocam.data.transforms import JointTransform
from histocam.methods.base import WSOLMethod
from histocam.metrics.classification import ClassificationAccuracy
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.per_image import PerImageScores
from histocam.train.loader import make_loader


@dataclass
class SplitResult:
    accuracy: ClassificationAccuracy
    histogram: PixelHistogram | None
    per_image: PerImageScores | None = None
    by_class: dict[int, PixelHistogram] = field(default_factory=dict)  # ``histogram`` = their sum
    predictions: list[dict] = field(default_factory=list)

    @property
    def pxap(self) -> float | None:
        from histocam.metrics.pxap import pxap_from_histograms

        if self.histogram is None or int(self.histogram.fg.sum()) == 0:
            return None
        return pxap_from_histograms(self.histogram.fg.cpu().numpy(),
                                    self.histogram.bg.cpu().numpy())


def evaluate_split(method: WSOLMethod, dataset, data_config: DataConfig, device: torch.device, *,
                   batch_size: int = 64, num_workers: int = 0, localize: bool = True,
                   tau: float | None = None,
                   map_sink: Callable[[str, torch.Tensor], None] | None = None,
                   on_bad_sample: str = "error", shard: bool = False) -> SplitResult:
    """One pass over ``dataset`` (eval transform). Maps are for the ground-truth class.

    ``tau`` enables per-image scores at that operating threshold; ``map_sink(id, map)`` receives
    every map (CPU float) as it is made, e.g. to stream it to disk: nothing is kept in memory.
    Images without a mask count for accuracy only; pixels of an image's ignore mask
    (``localization.txt``'s third column) count for no localisation metric.

    ``shard`` (under ``torch.distributed``; a collective, every rank must call it): each rank
    evaluates its contiguous block of the split (``collectives.shard_indices``), then every metric
    is merged across the ranks through the metric protocol (``Metric.sync``), so that every rank
    returns the whole split's result; as the blocks are in rank order, the merged per-image rows
    and the predictions are in dataset order, as one process makes them. ``map_sink`` then sees
    the rank's own images only, in dataset order.
    """
    transform = JointTransform.from_config(data_config, train=False)
    indices = shard_indices(len(dataset)) if shard and distributed_ready() else None
    loader = make_loader(dataset, transform, batch_size, shuffle=False, num_workers=num_workers,
                         on_bad_sample=on_bad_sample, indices=indices)
    accuracy = ClassificationAccuracy(method.num_classes)
    hist = PixelHistogram(device) if localize else None
    per_image = PerImageScores(tau) if (localize and tau is not None) else None
    result = SplitResult(accuracy, hist, per_image)
    was_training = method.training
    method.eval()
    try:
        for batch in loader:
            if batch is None:
                continue
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            if localize:
                with torch.no_grad():  # top-down CAMs re-enable gradients where they need them
                    logits, maps = method.localize_with_logits(images, labels)
                maps = maps.detach().float()
                has = batch["has_mask"].to(device)
                if bool(has.any()):
                    masks = batch["mask"].to(device)[has] > 0.5
                    ignore = batch["ignore"].to(device)[has] if "ignore" in batch else None
                    ids = [i for i, h in zip(batch["id"], has.tolist()) if h]
                    annotated, classes = maps[has], labels[has]
                    for c in classes.unique().tolist():  # each pixel binned once, by class
                        pick = classes == c
                        result.by_class.setdefault(c, PixelHistogram(device)).update(
                            annotated[pick], masks[pick], [i for i, k in zip(ids, pick) if k],
                            ignore=ignore[pick] if ignore is not None else None)
                    if per_image is not None:
                        per_image.update(annotated, masks, ids, ignore=ignore)
                if map_sink is not None:
                    for image_id, m in zip(batch["id"], maps.cpu()):
                        map_sink(image_id, m)
            else:
                with torch.no_grad():
                    logits = method(images).logits
            accuracy.update(logits.detach(), labels)
            probs = torch.softmax(logits.detach().float(), dim=1).cpu()
            for image_id, y, p, i in zip(batch["id"], labels.cpu().tolist(), probs,
                                         batch["index"].tolist()):
                result.predictions.append({"id": image_id, "label": y, "prediction": int(p.argmax()),
                                           "confidence": float(p.max()), "index": i})
    finally:
        method.train(was_training)
    if indices is not None:
        _merge_ranks(result, method.num_classes, device)
    for record in result.predictions:
        del record["index"]
    for class_hist in result.by_class.values():
        hist.merge(class_hist)
    return result


def _merge_ranks(result: SplitResult, num_classes: int, device: torch.device) -> None:
    """Every rank's shard merged into ``result`` (``Metric.sync``; predictions in dataset order)."""
    result.accuracy.sync()
    if result.histogram is not None:
        for c in range(num_classes):  # every rank syncs every class, present in its shard or not
            merged = result.by_class.setdefault(c, PixelHistogram(device)).sync()
            if int(merged.fg.sum() + merged.bg.sum()) == 0:
                del result.by_class[c]
    if result.per_image is not None:
        result.per_image.sync()
    gathered = all_gather_objects(result.predictions)
    result.predictions = sorted((p for part in gathered for p in part), key=lambda p: p["index"])
