"""One pass of a method over a split, feeding a collection of metrics (``histocam.metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from histocam.core.collectives import distributed_ready, shard_indices
from histocam.core.progress import task as progress_task
from histocam.data.config import DataConfig
from histocam.data.transforms import JointTransform
from histocam.methods.base import WSOLMethod
from histocam.metrics.protocol import Batch, Metric
from histocam.train.loader import make_loader

MetricSet = Mapping[str, Metric]


def evaluate_split(method: WSOLMethod, dataset, data_config: DataConfig, device: torch.device,
                   metrics: MetricSet, *, batch_size: int = 64, num_workers: int = 0,
                   map_sink: Callable[[str, torch.Tensor], None] | None = None,
                   on_bad_sample: str = "error", shard: bool = False,
                   progress: str | None = None) -> MetricSet:
    """Feed every metric of ``metrics`` the same ``Batch`` for each batch of ``dataset`` (eval
    transform) and return ``metrics``.

    The pass computes what the metrics need (``Metric.needs``): the logits always; the maps of
    each image's ground-truth class when a metric needs them or ``map_sink`` is given (``map_sink(id,
    map)`` receives every map, CPU float, as it is made, e.g. to stream it to disk: nothing is kept
    in memory); the encoder's last features of the annotated images when a metric needs them.
    Images without a mask count for the image metrics only; pixels of an image's ignore mask
    (``localization.txt``'s third column) count for no localisation metric.

    ``shard`` (under ``torch.distributed``; a collective, every rank must call it): each rank
    evaluates its contiguous block of the split (``collectives.shard_indices``), then every metric
    is merged across the ranks through the metric protocol (``Metric.sync``), so that every rank
    holds the whole split's result; as the blocks are in rank order, records merged in rank order
    (per-image rows, predictions) are in dataset order, as one process makes them. ``map_sink``
    then sees the rank's own images only, in dataset order.

    ``progress``: the description of a progress task counting the images
    (``histocam.core.progress``; None: none).
    """
    needs = frozenset().union(*(m.needs for m in metrics.values()))
    localize = "maps" in needs or map_sink is not None
    transform = JointTransform.from_config(data_config, train=False)
    indices = shard_indices(len(dataset)) if shard and distributed_ready() else None
    loader = make_loader(dataset, transform, batch_size, shuffle=False, num_workers=num_workers,
                         on_bad_sample=on_bad_sample, indices=indices)
    was_training = method.training
    method.eval()
    n_images = len(indices) if indices is not None else len(dataset)
    try:
        for batch in _counted(loader, progress, n_images):
            if batch is None:
                continue
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            annotated = batch["has_mask"].to(device)
            maps = features = None
            with torch.no_grad():  # top-down CAMs re-enable gradients where they need them
                if localize:
                    logits, maps = method.localize_with_logits(images, labels)
                    maps = maps.detach().float()
                else:
                    logits = method(images).logits
                if "features" in needs and bool(annotated.any()):
                    features = _annotated_features(method, images, annotated)
            step = Batch(ids=list(batch["id"]), labels=labels, logits=logits.detach(), maps=maps,
                         masks=batch["mask"].to(device) > 0.5, annotated=annotated,
                         ignore=batch["ignore"].to(device), features=features)
            for metric in metrics.values():
                metric.update(step)
            if map_sink is not None:
                for image_id, m in zip(batch["id"], maps.cpu()):
                    map_sink(image_id, m)
    finally:
        method.train(was_training)
    if indices is not None:
        for metric in metrics.values():
            metric.sync()
    return metrics


def _counted(loader, description: str | None, n_images: int):
    """The loader's batches, counted by their images in a progress task named ``description``."""
    with progress_task(description, n_images, unit="images") as running:
        for batch in loader:
            yield batch
            running.advance(len(batch["id"]) if batch is not None else 0)


def _annotated_features(method: WSOLMethod, images: torch.Tensor,
                        annotated: torch.Tensor) -> torch.Tensor:
    """The encoder's last feature map of the annotated images, computed on them alone, in the
    rows of a batch-sized tensor (the other rows are zeros, and no metric reads them)."""
    if bool(annotated.all()):
        return method(images).features[-1]
    picked = method(images[annotated]).features[-1]
    out = picked.new_zeros((images.shape[0], *picked.shape[1:]))
    out[annotated] = picked
    return out
