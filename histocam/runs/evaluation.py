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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from histocam.core import collectives
from histocam.core.devices import command_device
from histocam.core.results import (
    MAP_SCALES,
    ClassLocalization,
    ClassMapping,
    EvaluationResult,
    Localization,
    PerImageMeans,
    PerImageRow,
)
from histocam.data.config import DataConfig
from histocam.data.open import DatasetSource, open_source
from histocam.maps.store import ShardedNpzWriter
from histocam.metrics.class_histograms import ClassHistograms
from histocam.metrics.classification import ClassificationAccuracy
from histocam.metrics.confusion import best_threshold
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.localization import localization_report, write_threshold_curves
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.predictions import Predictions
from histocam.metrics.protocol import Metric
from histocam.metrics.pxap import chance_pxap, pxap_from_histograms
from histocam.metrics.separability import SeparabilityIndex
from histocam.train.memory import fit_batch
from histocam.train.split_pass import evaluate_split

if TYPE_CHECKING:
    from histocam.core.rundir import EvaluationFiles
    from histocam.runs.run import Run


class DataMismatchError(ValueError):
    """Other data whose classes cannot be scored by the run's classifier."""


def evaluate_run(run: Run, checkpoint: str, split: str = "test", *,
                 data: str | Path | DataConfig | None = None, device: str = "auto",
                 save_maps: bool = False, separability: bool = False,
                 batch_size: int | None = None) -> EvaluationResult:
    """The metrics of ``checkpoint`` on ``split`` (written under the run, and returned).

    ``batch_size``: images per batch (per rank); by default the largest that fits the memory
    budget (``histocam.train.memory.fit_batch``), at most the run's ``train.eval_batch_size``.

    Under torchrun (a collective: every rank calls it) the images of valpx and of ``split`` are
    shared out over the ranks (``shard=True``), every metric is merged through the metric protocol
    and rank 0 alone writes the files (the other ranks wait for it); every rank returns the same
    metrics. It joins the job's process group, making it on first use (``collectives.setup``)."""
    dev = command_device(device)
    collectives.setup(dev)
    method, class_names = run.method(checkpoint, str(dev))
    t = run.config.train
    batch = batch_size or fit_batch(method, run.config.data.eval_size, dev,
                                    limit=t.eval_batch_size)
    kwargs = dict(batch_size=batch, num_workers=t.num_workers, shard=True)
    own = open_source(run.config.data)
    label = f"{run.dir.name} {checkpoint}"
    valpx, tau = tau_star_on_valpx(method, own, run.config.data, dev, kwargs, label)
    data_config = run.data_config(data)
    tag = run.data_tag(data)
    source = own if tag is None else open_source(data_config)
    if len(source.class_names) != len(class_names):
        raise DataMismatchError(
            f"{data_config.dataset}: {len(source.class_names)} classes "
            f"({', '.join(source.class_names)}), the run's classifier has {len(class_names)} "
            f"({', '.join(class_names)})")
    metrics = SplitMetrics(len(class_names), tau, dev,
                          SeparabilityIndex(source.class_names) if separability else None)
    files = run.dir.evaluation(checkpoint, split, tag)
    evaluate_split_saving_maps(method, source.dataset(split), data_config, dev, metrics, kwargs,
                               f"{label}: {split}" + (f" of {tag}" if tag else ""),
                               files.maps if save_maps else None)
    evaluation = EvaluationResult(
        run=str(run.dir), checkpoint=checkpoint, split=split, method=run.config.method.name,
        data=data_config.dataset, maps=MAP_SCALES[method.probability_maps],
        classification=metrics.accuracy.compute(),
        class_names=(ClassMapping(run=class_names, data=source.class_names)
                     if tag is not None else None),
        localization=metrics.localization(valpx if tau is not None else None,
                                          source.class_names),
        separability=metrics.separability.compute() if metrics.separability else None,
        per_image=metrics.rows())
    if collectives.is_main():
        write_result(files, evaluation, metrics)
    collectives.barrier()  # the files exist before any rank goes on (e.g. to read them)
    return evaluation


def tau_star_on_valpx(method: nn.Module, source: DatasetSource, data: DataConfig,
                      device: torch.device, kwargs: dict, label: str
                      ) -> tuple[PixelHistogram, float | None]:
    """valpx's pixel histograms of ``method``'s maps (a ``WSOLMethod``, or anything with its
    ``localize_with_logits``) and τ* = argmax mIoU on them (None when valpx has no foreground
    pixels)."""
    valpx = PixelHistogram(device)
    evaluate_split(method, source.dataset("valpx"), data, device, {"pixels": valpx}, **kwargs,
                   progress=f"{label}: valpx (τ*)")
    return valpx, (best_threshold(valpx) if valpx.pxap is not None else None)


@dataclass
class SplitMetrics:
    """The metrics of an evaluated split: accuracy, pixel histograms per class, per-image scores
    at τ* (0.5 when valpx has no foreground), the predictions, and optionally J."""

    num_classes: int
    tau: float | None
    device: torch.device
    separability: SeparabilityIndex | None = None

    def __post_init__(self) -> None:
        self.accuracy = ClassificationAccuracy(self.num_classes)
        self.histograms = ClassHistograms(self.num_classes, self.device)
        self.per_image = PerImageScores(self.tau if self.tau is not None else 0.5)
        self.predictions = Predictions()

    def collection(self) -> dict[str, Metric]:
        found = {"accuracy": self.accuracy, "histograms": self.histograms,
                 "per_image": self.per_image, "predictions": self.predictions}
        if self.separability is not None:
            found["separability_index"] = self.separability
        return found

    def localization(self, valpx: PixelHistogram | None,
                     class_names: list[str]) -> Localization | None:
        """The localisation report (None without foreground pixels in the split); τ* from
        ``valpx`` (None: valpx has no foreground, the per-image scores are then at 0.5)."""
        total = self.histograms.total()
        if total.pxap is None:
            return None
        means = PerImageMeans(**{k: self.per_image.mean(k)
                                 for k in ("ap", "dice_fg", "dice_bg", "iou_fg", "iou_bg")})
        return localization_report(
            total, valpx, tau_star_source="valpx" if valpx is not None else "none",
            per_image_mean_at_tau_star=means if valpx is not None else None,
            per_image_mean_at_half=None if valpx is not None else means,
            per_class=self.per_class(class_names))

    def per_class(self, class_names: list[str]) -> dict[str, ClassLocalization]:
        """PxAP and its chance level on each class's images, and the mean per-image AP next to
        the mean foreground fraction (the per-image chance level): glands are foreground in both
        GlaS classes, so a map must localise in each class, not only on average."""
        labels = {row["id"]: row["label"] for row in self.predictions.rows}
        out = {}
        for c, hist in sorted(self.histograms.by_class.items()):
            if int(hist.fg.sum()) == 0:
                continue
            mine = [r for r in self.per_image.rows
                    if labels.get(r["id"]) == c and r["ap"] == r["ap"]]  # not NaN
            fg, bg = hist.fg.cpu().numpy(), hist.bg.cpu().numpy()
            out[class_names[c]] = ClassLocalization(
                pxap=pxap_from_histograms(fg, bg), chance=chance_pxap(fg, bg),
                n_images=hist.n_images,
                mean_image_ap=float(np.mean([r["ap"] for r in mine])) if mine else None,
                mean_fg_fraction=(float(100 * np.mean([r["fg_fraction"] for r in mine]))
                                  if mine else None))
        return out

    def rows(self) -> list[PerImageRow]:
        """One row per image: its prediction, and its scores when it has a mask."""
        scores = {row["id"]: row for row in self.per_image.rows}
        return [PerImageRow(**{**p, **scores.get(p["id"], {})}) for p in self.predictions.rows]


def evaluate_split_saving_maps(method: nn.Module, dataset, data: DataConfig, device: torch.device,
                               metrics: SplitMetrics, kwargs: dict, progress: str,
                               maps: Path | None) -> None:
    """One pass over ``dataset`` feeding ``metrics``; with ``maps`` every map is also streamed
    to that float16 store (its parts removed if the pass fails; rank 0 writes the one store)."""
    writer = ShardedNpzWriter(maps) if maps is not None else None
    try:
        evaluate_split(method, dataset, data, device, metrics.collection(), **kwargs,
                       map_sink=(lambda i, m: writer.add(i, m.half().numpy())) if writer else None,
                       progress=progress)
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer:
        writer.close()


def write_result(files: EvaluationFiles, evaluation: EvaluationResult,
                 metrics: SplitMetrics) -> None:
    """The evaluation's files: curves (with localisation), then the result and its rows."""
    if evaluation.localization is not None:
        title = f"{evaluation.method} {evaluation.checkpoint} {evaluation.split}"
        write_threshold_curves(metrics.histograms.total(), files.curves_csv, files.curves_png,
                               title=title)
    files.write(evaluation)
