"""``histocam ensemble RUN RUN [RUN ...] --out DIR``: the mean map of several runs, evaluated.

The runs (typically one config trained with several seeds) must share their whole ``data`` config
(so the same dataset, split, fold and evaluation size) and their classes, and their maps must be
of one kind (probabilities, or min–max normalised maps). Each image's map is the mean of the
members' maps of its ground-truth class, each member at its own checkpoint of the given name (its
own B-LOC epoch, say) and with its own test-time views and scales, min–max normalised again unless
the maps are probabilities, as the views of one method are (``maps.normalize.mean_map``); the
image's class probabilities are the mean of the members' softmax outputs. τ* is chosen on the mean
map of valpx, never on the evaluated split. The result is an ``EvaluationResult`` in the
ensemble's own folder (``core.studydirs.EnsembleDir``); the member runs are only read, and a member
checkpoint that changes during the evaluation (a run still training) stops it before anything is
written.

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
from histocam.core.rundir import RunError
from histocam.core.studydirs import EnsembleDir
from histocam.data.open import open_source
from histocam.maps.normalize import mean_map
from histocam.methods.base import MethodOutput, WSOLMethod
from histocam.runs.evaluation import (
    SplitMetrics,
    evaluate_split_saving_maps,
    tau_star_on_valpx,
    write_result,
)
from histocam.runs.run import Run
from histocam.train.memory import fit_batch


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
        return (self.mean_logits([out for out, _ in outs]),
                mean_map([m for _, m in outs], None, self.probability_maps))


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
    weights = checkpoint_times(runs, checkpoint)
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
            except (RunError, OSError) as exc:
                refused = str(exc)
        refused = collectives.from_main(refused)  # every rank stops, or none
        if refused is not None:
            raise RunError(refused)
        ensemble = MeanOfMethods(methods)
        data = runs[0].config.data
        t = runs[0].config.train
        limit = min(r.config.train.eval_batch_size for r in runs)
        batch = batch_size or min(fit_batch(m, data.eval_size, dev, limit=limit) for m in methods)
        kwargs = dict(batch_size=batch, num_workers=t.num_workers, shard=True)
        source = open_source(data)
        label = f"{folder.root.name} {checkpoint}"
        valpx, tau = tau_star_on_valpx(ensemble, source, data, dev, kwargs, label)
        metrics = SplitMetrics(len(names), tau, dev)
        evaluate_split_saving_maps(ensemble, source.dataset(split), data, dev, metrics, kwargs,
                                   f"{label}: {split}", files.maps if save_maps else None)
        kinds = dict.fromkeys(r.config.method.name for r in runs)
        result = EvaluationResult(
            run=str(folder.root), checkpoint=checkpoint, split=split,
            method=f"mean of {len(runs)}: {' + '.join(kinds)}", data=data.dataset,
            maps=MAP_SCALES[ensemble.probability_maps],
            classification=metrics.accuracy.compute(),
            localization=metrics.localization(valpx if tau is not None else None,
                                              source.class_names),
            per_image=metrics.rows())
        if checkpoint_times(runs, checkpoint) != weights:
            raise RunError(f"{folder.root}: a member's {checkpoint} checkpoint changed during the "
                           "evaluation (a run still training?); nothing written, evaluate again")
        if collectives.is_main():
            write_result(files, result, metrics)
        collectives.barrier()
    return result


def checkpoint_times(runs: list[Run], checkpoint: str) -> list[int]:
    """Each member's ``checkpoint`` file's modification time (ns); RunError naming a run that
    lacks it."""
    times = []
    for run in runs:
        path = run.checkpoint_path(checkpoint)
        if not path.is_file():
            raise RunError(f"{path}: checkpoint not found (is the run trained?)")
        times.append(path.stat().st_mtime_ns)
    return times


def ensemble_evaluation(runs: list[Run], checkpoint: str, split: str, out: str | Path, *,
                        device: str = "auto") -> EvaluationResult:
    """The stored evaluation of the mean map of ``runs`` in ``out``, evaluated first
    (``evaluate_ensemble``) when there is none or when a member's checkpoint is newer than it (a
    run trained again); RunError when ``out`` holds another ensemble."""
    folder = EnsembleDir(out)
    files = folder.evaluation(checkpoint, split)
    found = folder.read_members()
    if found is not None and files.json.is_file() and sorted(found) == sorted(
            str(r.dir.root.resolve()) for r in runs) and max(
            checkpoint_times(runs, checkpoint)) <= files.json.stat().st_mtime_ns:
        return folder.read_evaluation(checkpoint, split)
    return evaluate_ensemble(runs, checkpoint, split, out, device=device)
