"""A trained run ready to predict: checkpoint choice, the map's class, τ*, one call per batch.

Checkpoints (the survey's model selection, docs/protocol.md, "Model selection"): ``best-loc``
(B-LOC, chosen on valpx PxAP) gives maps and labels; ``best-cl`` (B-CL, chosen on valcl accuracy)
gives both too; ``both`` takes the labels from B-CL and the maps from B-LOC (two forward passes). τ*
is the threshold the evaluation chose on the run's valpx for the map checkpoint (argmax mIoU,
``histocam evaluate``): ``Run.tau_star`` reads it from the run's evaluations, only from one newer
than the checkpoint.

The map's class: ``auto`` is the run's positive class when its data has a fully negative class
and two classes (synthetic-node, CAMELYON16: the tumour map, whatever the prediction), otherwise
the predicted class of each input (the protocol maps the ground-truth class; at prediction time
the label is unknown, so the predicted class stands in for it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from histocam.core.devices import resolve_device
from histocam.data.open import negative_class
from histocam.methods.base import WSOLMethod
from histocam.runs.run import Run, RunError

CHECKPOINT_CHOICES = ("best-loc", "best-cl", "last", "both")


@dataclass
class Predictor:
    """Labels and maps of batches of B×3×E×E RGB images in [0, 1] (E = the run's eval size)."""

    map_method: WSOLMethod
    label_method: WSOLMethod | None  # None: the map checkpoint's logits give the labels
    class_names: list[str]
    map_class: int | None  # None: each image's predicted class
    eval_size: int
    device: torch.device
    map_checkpoint: str
    label_checkpoint: str
    tau: float | None
    tau_source: str
    positive_class: int | None = None  # the class that is not the data's fully negative one
    batch_size: int = 64  # the run's evaluation batch size
    source: str = ""  # the run directory, recorded with a slide's partial results
    # checkpoint name -> SHA-256 of its file: a stored result is reused only for the same weights
    checkpoints: dict[str, str] = field(default_factory=dict)
    stain_normalize: str = "none"  # the run's data.stain_normalize, applied to every input

    @classmethod
    def from_run(cls, run: Run | str | Path, checkpoint: str = "best-loc", *,
                 device: str = "auto", map_class: str = "auto",
                 threshold: float | None = None) -> Predictor:
        run = run if isinstance(run, Run) else Run(run)
        run.require_trained()
        if checkpoint not in CHECKPOINT_CHOICES:
            raise RunError(f"--checkpoint must be one of {', '.join(CHECKPOINT_CHOICES)}, got "
                           f"{checkpoint!r}")
        dev = resolve_device(device)
        map_ckpt, label_ckpt = ("best-loc", "best-cl") if checkpoint == "both" else (checkpoint,) * 2
        map_method, names = run.method(map_ckpt, str(dev))
        label_method = run.method(label_ckpt, str(dev))[0] if label_ckpt != map_ckpt else None
        if threshold is not None:
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"--threshold must be in [0, 1], got {threshold}")
            tau, source = float(threshold), "--threshold"
        else:
            tau, source = run.tau_star(map_ckpt)
        positive = positive_class(run, names)
        digests = {name: file_digest(run.dir.checkpoint(name)) for name in {map_ckpt, label_ckpt}}
        return cls(map_method, label_method, list(names),
                   positive if map_class == "auto" else resolve_map_class(names, map_class),
                   run.config.data.eval_size, dev, map_ckpt, label_ckpt, tau, source, positive,
                   run.config.train.eval_batch_size, str(run.dir.root.resolve()), digests,
                   run.config.data.stain_normalize)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities B×K, classes of the maps B) on the CPU, from one forward pass of the
        label checkpoint, without maps: the probabilities ``__call__`` gives."""
        images = images.to(self.device, non_blocking=True)
        labeller = self.label_method if self.label_method is not None else self.map_method
        logits = labeller(images).logits
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        classes = (probs.argmax(dim=1) if self.map_class is None else
                   torch.full((images.shape[0],), self.map_class, dtype=torch.long))
        return probs, classes

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probabilities B×K, classes of the maps B, maps B×E×E in [0, 1]), all on the CPU."""
        images = images.to(self.device, non_blocking=True)
        fixed = (None if self.map_class is None else
                 torch.full((images.shape[0],), self.map_class, dtype=torch.long, device=self.device))
        if self.label_method is None and fixed is not None:  # one forward pass gives both
            logits, maps = self.map_method.localize_with_logits(images, fixed)
            classes = fixed
        else:
            labeller = self.label_method if self.label_method is not None else self.map_method
            logits = labeller(images).logits
            classes = logits.argmax(dim=1) if fixed is None else fixed
            _, maps = self.map_method.localize_with_logits(images, classes)
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        return probs, classes.cpu(), maps.detach().float().cpu()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_map_class(class_names: list[str], map_class: str) -> int | None:
    """The class index of the maps named by ``map_class`` (a class name; ``predicted``: None for
    each input's prediction). ``auto`` is ``positive_class`` (module docstring)."""
    if map_class == "predicted":
        return None
    if map_class not in class_names:
        raise ValueError(f"--map-class {map_class!r} is not a class of the run "
                         f"({', '.join(class_names)}; or auto, predicted)")
    return class_names.index(map_class)


def positive_class(run: Run, class_names: list[str]) -> int | None:
    """The positive class of a two-class run whose data has a fully negative class (the tumour
    class of synthetic-node and CAMELYON16), else None."""
    negative = negative_class(run.config.data, class_names)
    return 1 - negative if negative is not None and len(class_names) == 2 else None
