"""``histocam ensemble RUN RUN [RUN ...] --out DIR``: the mean map of several runs, evaluated.

The runs (typically one config trained with several seeds) must share their data config (dataset,
split, fold, evaluation size) and their classes, and their maps must be of one kind (probabilities,
or min–max normalised maps). Each image's map is the mean of the members' maps of its ground-truth
class, each member at its own checkpoint of the given name (its own B-LOC epoch, say) and with its
own test-time views and scales, min–max normalised again unless the maps are probabilities, as the
views of one method are (``WSOLMethod.localize_with_logits``); the image's class probabilities
are the mean of the members' softmax outputs. τ* is chosen on the mean map of valpx, never on the
evaluated split. The result is an ``EvaluationResult`` in the ensemble's own folder
(``core.rundir.EnsembleDir``); the member runs are only read.

A mean of independently trained models' outputs is the classic ensemble (Lakshminarayanan et al.,
2017, "Simple and scalable predictive uncertainty estimation using deep ensembles"): it costs one
training and one pass per member.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from histocam.core import collectives
from histocam.core.devices import command_device
from histocam.core.results import MAP_SCALES, EvaluationResult
from histocam.core.rundir import EnsembleDir, RunError
from histocam.data.open import open_source
from histocam.maps.normalize import minmax_normalize
from histocam.maps.normalize import upsample as upsample_maps
from histocam.maps.store import ShardedNpzWriter
from histocam.methods.base import MethodOutput, WSOLMethod
from histocam.runs.evaluation import SplitMetrics, tau_star_on_valpx, write_result
from histocam.runs.run import Run
from histocam.train.memory import fit_batch
from histocam.train.split_pass import evaluate_split


class MeanOfMethods(nn.Module):
    """Several trained methods evaluated as one: the mean of their maps and of their class
    probabilities (the logits are the log of that mean, so their softmax is the mean)."""

    def __init__(self, methods: list[WSOLMethod]) -> None:
        super().__init__()
        kinds = {m.probability_maps for m in methods}
        if len(kinds) != 1:
            raise ValueError("an ensemble averages maps of one kind: probabilities or min–max "
                             "normalised maps, not both")
        self.members = nn.ModuleList(methods)
        self.probability_maps = kinds.pop()

    @staticmethod
    def mean_logits(logits: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([out.float().softmax(dim=1) for out in logits]).mean(dim=0).log()

    def forward(self, images: torch.Tensor) -> MethodOutput:
        return MethodOutput(logits=self.mean_logits([m(images).logits for m in self.members]),
                            features=[])

    def localize_with_logits(self, images: torch.Tensor, classes: torch.Tensor,
                             upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, maps) as ``WSOLMethod.localize_with_logits``; with ``upsample=False`` the
        members' low-resolution maps are resized to the finest member's grid before the mean."""
        outs = [m.localize_with_logits(images, classes, upsample) for m in self.members]
        maps = [m.float() for _, m in outs]
        size = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
        mean = sum(upsample_maps(m, size) for m in maps) / len(maps)
        logits = self.mean_logits([out for out, _ in outs])
        return logits, (mean if self.probability_maps else minmax_normalize(mean, relu=False))


def check_members(runs: list[Run]) -> None:
    """RunError unless ``runs`` are two or more distinct runs on the same data."""
    if len(runs) < 2:
        raise RunError("an ensemble needs two or more runs")
    roots = [r.dir.root.resolve() for r in runs]
    twice = sorted({str(p) for p in roots if roots.count(p) > 1})
    if twice:
        raise RunError(f"{twice[0]}: given twice; each run counts once in the mean map")
    first = runs[0].config.data.model_dump(mode="json")
    for run in runs[1:]:
        other = run.config.data.model_dump(mode="json")
        changed = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if changed:
            key = changed[0]
            raise RunError(f"{run.dir}: data.{key} is {other.get(key)!r}, {runs[0].dir} has "
                           f"{first.get(key)!r}; an ensemble's runs are evaluated on the same "
                           "images")


def evaluate_ensemble(runs: list[Run], checkpoint: str, split: str, out: str | Path, *,
                      device: str = "auto", batch_size: int | None = None,
                      save_maps: bool = False) -> EvaluationResult:
    """The metrics of the mean map of ``runs`` at ``checkpoint`` on ``split``, written under
    ``out`` (an ``EnsembleDir``; ``save_maps``: the mean maps too, float16) and returned. Under
    torchrun every rank calls it, as ``evaluate_run``; rank 0 alone writes."""
    check_members(runs)
    folder = EnsembleDir(out)
    files = folder.evaluation(checkpoint, split)  # a checkpoint name checked before any write
    dev = command_device(device)
    collectives.setup(dev)
    methods, names = [], None
    for run in runs:
        method, class_names = run.method(checkpoint, str(dev))
        if names is not None and class_names != names:
            raise RunError(f"{run.dir}: classes {', '.join(class_names)}, {runs[0].dir} has "
                           f"{', '.join(names)}")
        if methods and method.probability_maps != methods[0].probability_maps:
            raise RunError(f"{run.dir}: its maps are {MAP_SCALES[method.probability_maps]}, "
                           f"{runs[0].dir}'s {MAP_SCALES[methods[0].probability_maps]}; an "
                           "ensemble averages maps of one kind")
        methods.append(method)
        names = class_names
    with folder.lock("ensemble evaluation"):
        refused = None
        if collectives.is_main():
            try:
                folder.claim([r.dir.root for r in runs])
            except RunError as exc:
                refused = str(exc)
        refused = collectives.from_main(refused)  # every rank stops, or none
        if refused is not None:
            raise RunError(refused)
        ensemble = MeanOfMethods(methods)
        data = runs[0].config.data
        t = runs[0].config.train
        batch = batch_size or fit_batch(methods[0], data.eval_size, dev,
                                        limit=min(r.config.train.eval_batch_size for r in runs))
        kwargs = dict(batch_size=batch, num_workers=t.num_workers, shard=True)
        source = open_source(data)
        label = f"{folder.root.name} {checkpoint}"
        valpx, tau = tau_star_on_valpx(ensemble, source, data, dev, kwargs, label)
        metrics = SplitMetrics(len(names), tau, dev)
        writer = ShardedNpzWriter(files.maps) if save_maps else None
        try:
            evaluate_split(ensemble, source.dataset(split), data, dev, metrics.collection(),
                           **kwargs, map_sink=(lambda i, m: writer.add(i, m.half().numpy()))
                           if writer else None, progress=f"{label}: {split}")
        except BaseException:
            if writer:
                writer.abort()
            raise
        if writer:
            writer.close()
        kinds = dict.fromkeys(r.config.method.name for r in runs)
        result = EvaluationResult(
            run=str(folder.root), checkpoint=checkpoint, split=split,
            method=f"mean of {len(runs)}: {' + '.join(kinds)}", data=data.dataset,
            maps=MAP_SCALES[ensemble.probability_maps],
            classification=metrics.accuracy.compute(),
            localization=metrics.localization(valpx if tau is not None else None,
                                              source.class_names),
            per_image=metrics.rows())
        if collectives.is_main():
            write_result(files, result, metrics)
        collectives.barrier()
    return result


def ensemble_evaluation(runs: list[Run], checkpoint: str, split: str, out: str | Path, *,
                        device: str = "auto") -> EvaluationResult:
    """The stored evaluation of the mean map of ``runs`` in ``out``, evaluated first when there
    is none, when ``out`` holds other runs' (RunError, as ``evaluate_ensemble``) or when a
    member's checkpoint is newer than it (a run trained again)."""
    folder = EnsembleDir(out)
    files = folder.evaluation(checkpoint, split)
    found = folder.read_members()
    if found is not None and files.json.is_file() and sorted(found) == sorted(
            str(r.dir.root.resolve()) for r in runs) and all(
            r.checkpoint_path(checkpoint).stat().st_mtime <= files.json.stat().st_mtime
            for r in runs):
        return folder.read_evaluation(checkpoint, split)
    return evaluate_ensemble(runs, checkpoint, split, out, device=device)
