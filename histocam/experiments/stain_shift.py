"""Robustness to stain shift (PixelCAM Figs. 4/5 and 9/10): a run's test images re-stained at
increasing strengths, classification accuracy (CL) and PxAP per level.

PixelCAM re-stains with the stain styles of another dataset ordered by their distance to the
original stain; without a second stained domain here, the shift is synthetic and monotone: one
fixed direction in HED optical-density space (Ruifrok & Johnston 2001, ``histocam.data.stain``),
walked at n increasing strengths s_k = k · s_max / n (``levels``, 10 by default as in the paper).
Every test image gets the same new stain at level k: concentrations C' = α_k ⊙ C + β_k with
α_k = 1 + s_k · a and β_k = s_k · b, where a and b (per stain: haematoxylin, eosin; DAB untouched)
are drawn once from ``seed`` with |a|, |b| in [0.5, 1]. Level 0 is the original images. The
result is a ``StainShiftResult``, stored with the run (``RunDir.experiment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histocam.core.devices import resolve_device
from histocam.core.experiment_results import StainShiftCurve, StainShiftResult
from histocam.core.progress import Stages
from histocam.core.rundir import LABEL, SELECTED
from histocam.data.open import open_source
from histocam.data.sample import Sample
from histocam.data.stain import hed_to_rgb, rgb_to_hed
from histocam.metrics.classification import ClassificationAccuracy
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.pxap import chance_pxap
from histocam.runs.run import Run
from histocam.train.memory import fit_batch
from histocam.train.split_pass import evaluate_split

N_LEVELS = 10


@dataclass(frozen=True)
class StainShift:
    """C' = (1 + s·a) ⊙ C + s·b per stain channel (H, E, DAB) at strength s."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]

    @classmethod
    def from_seed(cls, seed: int) -> StainShift:
        rng = np.random.default_rng(seed)
        sign = rng.choice([-1.0, 1.0], size=(2, 2))
        size = rng.uniform(0.5, 1.0, size=(2, 2))
        a, b = sign * size
        return cls((float(a[0]), float(a[1]), 0.0), (float(b[0]), float(b[1]), 0.0))

    def apply(self, image: np.ndarray, strength: float) -> np.ndarray:
        """H×W×3 uint8 RGB re-stained at ``strength`` (uint8; 0 returns the image unchanged)."""
        if strength == 0:
            return image
        rgb = torch.from_numpy(image).permute(2, 0, 1).double() / 255.0
        alpha = 1.0 + strength * torch.tensor(self.a, dtype=torch.float64)[:, None, None]
        beta = strength * torch.tensor(self.b, dtype=torch.float64)[:, None, None]
        out = hed_to_rgb(rgb_to_hed(rgb) * alpha + beta).clamp(0.0, 1.0)
        return (out * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


class RestainedDataset:
    """A split whose images are re-stained on access (masks, labels and ids unchanged)."""

    def __init__(self, dataset, shift: StainShift, strength: float) -> None:
        self.dataset, self.shift, self.strength = dataset, shift, strength

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def ids(self) -> list[str]:
        return self.dataset.ids

    def __getitem__(self, index: int) -> Sample:
        s = self.dataset[index]
        return Sample(self.shift.apply(s.image, self.strength), s.label, s.mask, s.id, s.path,
                      list(s.warnings), ignore=s.ignore)


def strengths(max_strength: float, n_levels: int = N_LEVELS) -> list[float]:
    """[0, s_max/n, 2 s_max/n, ..., s_max]: level 0 is the original stain."""
    if not max_strength > 0:
        raise ValueError(f"--max-strength must be > 0, got {max_strength}")
    if n_levels < 1:
        raise ValueError(f"--levels must be at least 1, got {n_levels}")
    return [max_strength * k / n_levels for k in range(n_levels + 1)]


def run_stain_shift(run_dir: str | Path, *, checkpoints: tuple[str, ...] = SELECTED,
                    max_strength: float = 0.5, n_levels: int = N_LEVELS, seed: int = 0,
                    split: str = "test", device: str = "auto") -> Path:
    """Evaluate each checkpoint at each level; store the result with the run, return its path."""
    run = Run(run_dir).require_trained()
    with run.writing("stain-shift", device):  # the run's lock, until the result is written
        return _stain_shift(run, checkpoints, max_strength, n_levels, seed, split, device)


def _stain_shift(run: Run, checkpoints: tuple[str, ...], max_strength: float, n_levels: int,
                 seed: int, split: str, device: str) -> Path:
    dev = resolve_device(device)
    shift = StainShift.from_seed(seed)
    levels = strengths(max_strength, n_levels)
    source = open_source(run.config.data)
    dataset = source.dataset(split)
    t = run.config.train
    curves = {}
    stages = Stages(len(checkpoints))
    for ckpt in checkpoints:
        stages.next(f"{run.dir.name} {LABEL[ckpt]}: {split} images at {n_levels + 1} stain levels")
        method, names = run.method(ckpt, str(dev))
        batch = fit_batch(method, run.config.data.eval_size, dev, limit=t.eval_batch_size)
        accuracy, pxap, chance = [], [], []
        for level, strength in enumerate(levels):
            classified, pixels = ClassificationAccuracy(len(names)), PixelHistogram(dev)
            evaluate_split(method, RestainedDataset(dataset, shift, strength), run.config.data,
                           dev, {"accuracy": classified, "pixels": pixels},
                           batch_size=batch, num_workers=t.num_workers,
                           progress=f"level {level}/{n_levels} (s = {strength:.3g})")
            accuracy.append(classified.compute().accuracy)
            pxap.append(pixels.pxap)
            fg, bg = pixels.fg.cpu().numpy(), pixels.bg.cpu().numpy()
            chance.append(chance_pxap(fg, bg) if pixels.pxap is not None else None)
        curves[ckpt] = StainShiftCurve(accuracy=accuracy, pxap=pxap, chance=chance)
    result = StainShiftResult(
        definition=f"test images re-stained in HED optical-density space, C' = (1 + s·a)⊙C + s·b"
                   f" with a = {[round(v, 3) for v in shift.a]}, b = "
                   f"{[round(v, 3) for v in shift.b]} (H, E, DAB; seed {seed}), s = level · "
                   f"{max_strength}/{n_levels}; level 0 = original",
        split=split, seed=seed, a=list(shift.a), b=list(shift.b),
        levels=list(range(n_levels + 1)), strengths=levels, checkpoints=curves)
    return result.write(run.dir.experiment("stain-shift"))
