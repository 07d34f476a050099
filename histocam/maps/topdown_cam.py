"""Top-down CAMs (survey §2.3): one base that owns hooks, targets, model state and normalisation.

A subclass only says how to turn the target layers' activations (and, for the gradient family,
their gradients) into one low-resolution map per layer. The base:
- captures activations with forward hooks (standalone use on any ``nn.Module`` with named target
  layers) or takes them from a ``forward_fn`` that returns ``(logits, activations)``;
- targets the given class per sample (the ground truth, per the protocol) or the prediction;
- runs in eval mode and restores the model's train/eval mode, its parameters' ``requires_grad``
  and removes its hooks on exit, also after an exception; parameter gradients are never touched
  (``torch.autograd.grad`` on activations only);
- records the autograd graph only from the first target layer on: in hook mode the parameters are
  frozen for the call and each target output that does not already require gradients becomes a
  leaf (a copy, so in-place operations downstream do not alter the captured activation), so the
  part of the network before the target layer runs as a plain inference forward;
- fuses several layers (mean of per-layer min–max maps; LayerCAM overrides) and applies the
  protocol's ReLU -> min–max -> bilinear (``histocam.maps.normalize``), on the model's
  device, batched.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from histocam.maps.normalize import minmax_normalize
from histocam.maps.normalize import upsample as upsample_maps

ForwardFn = Callable[[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]


def default_logits(output) -> torch.Tensor:
    """Logits from a model output: a tensor, an object with ``.logits``, or a tuple's first item."""
    if torch.is_tensor(output):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


@dataclass
class CAMContext:
    """What a method may use: inputs, targets, logits, activations and helpers."""

    images: torch.Tensor
    classes: torch.Tensor
    logits: torch.Tensor
    activations: list[torch.Tensor]
    engine: TopDownCAM

    def gradients(self) -> list[torch.Tensor]:
        """d(score of each sample's target class) / d(activations), per sample (batch-safe in
        eval mode: samples do not interact)."""
        score = self.logits.gather(1, self.classes[:, None]).sum()
        return list(torch.autograd.grad(score, self.activations, retain_graph=True))

    def class_scores(self, inputs: torch.Tensor, classes: torch.Tensor,
                     softmax: bool = True) -> torch.Tensor:
        """Score of ``classes`` for a batch of (masked) inputs, without gradients, in chunks."""
        return self.engine.score(inputs, classes, softmax)


class TopDownCAM(abc.ABC):
    """Base of GradCAM & co. ``cam(images, classes=None)`` -> B×H×W maps in [0, 1].

    With ``forward_fn`` (``x -> (logits, activations)``), the function owns the graph: for the
    gradient family its activations must require gradients and the logits depend on them.
    """

    needs_gradients = True

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module | str] = (), *,
                 forward_fn: ForwardFn | None = None, chunk_size: int = 32,
                 progress: bool = False) -> None:
        if forward_fn is None and not target_layers:
            raise ValueError("give target_layers (modules or their names) or a forward_fn")
        self.model = model
        self.target_layers = [self._resolve(t) for t in target_layers]
        self.forward_fn = forward_fn
        self.chunk_size = chunk_size
        self.progress = progress

    # ------------------------------------------------------------------ subclass API
    @abc.abstractmethod
    def layer_maps(self, ctx: CAMContext) -> list[torch.Tensor]:
        """Raw B×h×w map per target layer (before ReLU and normalisation)."""

    def fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Several layers -> one map: mean of per-layer ReLU + min–max maps at the largest size."""
        if len(maps) == 1:
            return maps[0]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        scaled = [upsample_maps(minmax_normalize(m, relu=True), size, clamp=False) for m in maps]
        return torch.stack(scaled).mean(0)

    # ------------------------------------------------------------------ public
    def __call__(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        return self.compute(images, classes)[1]

    def compute(self, images: torch.Tensor, classes: torch.Tensor | None = None,
                upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, maps): maps for ``classes`` (default: the predicted class), at input resolution
        or, with ``upsample=False``, normalised at the (largest) layer resolution."""
        with self._session() as captured, torch.enable_grad():
            x = images.detach()
            if self.forward_fn is not None:
                logits, activations = self.forward_fn(x)
            else:
                logits = default_logits(self.model(x))
                activations = list(captured)
            if classes is None:
                classes = logits.argmax(dim=1)
            classes = classes.to(logits.device).long()
            ctx = CAMContext(images.detach(), classes, logits, activations, self)
            raw = [m.detach() for m in self.layer_maps(ctx)]
        low = minmax_normalize(self.fuse(raw), relu=True)
        return logits.detach(), (upsample_maps(low, tuple(images.shape[-2:])) if upsample else low)

    def score(self, inputs: torch.Tensor, classes: torch.Tensor, softmax: bool) -> torch.Tensor:
        """Class scores of ``inputs`` (N×C×H×W) in chunks of ``chunk_size``, no gradients."""
        out = []
        chunks = range(0, inputs.shape[0], self.chunk_size)
        with torch.no_grad(), self._hooks_paused():
            for start in _progress(chunks, self.progress, type(self).__name__):
                part = inputs[start : start + self.chunk_size]
                if self.forward_fn is not None:
                    logits = self.forward_fn(part)[0]
                else:
                    logits = default_logits(self.model(part))
                probs = torch.softmax(logits.float(), dim=1) if softmax else logits.float()
                out.append(probs.gather(1, classes[start : start + part.shape[0], None])[:, 0])
        return torch.cat(out)

    # ------------------------------------------------------------------ internals
    def _resolve(self, layer: nn.Module | str) -> nn.Module:
        if isinstance(layer, nn.Module):
            return layer
        modules = dict(self.model.named_modules())
        if layer not in modules:
            raise KeyError(f"no module named {layer!r} in {type(self.model).__name__}")
        return modules[layer]

    @contextlib.contextmanager
    def _session(self) -> Iterator[list[torch.Tensor]]:
        was_training = self.model.training
        captured: list[torch.Tensor] = []
        self._paused = False

        leaves = self.needs_gradients

        def hook(_module, _inputs, output):
            if self._paused:
                return None
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if not leaves or tensor.requires_grad:  # already inside the recorded graph
                captured.append(tensor)
                return None
            leaf = tensor.detach().requires_grad_(True)
            captured.append(leaf)
            passed_on = leaf.clone()
            if isinstance(output, list):
                return [passed_on, *output[1:]]
            return (passed_on, *output[1:]) if isinstance(output, tuple) else passed_on

        hooked = self.forward_fn is None
        handles = [layer.register_forward_hook(hook) for layer in self.target_layers] if hooked else []
        frozen = [p for p in self.model.parameters() if p.requires_grad] if hooked else []
        for p in frozen:
            p.requires_grad_(False)
        self.model.eval()
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()
            for p in frozen:
                p.requires_grad_(True)
            self.model.train(was_training)

    @contextlib.contextmanager
    def _hooks_paused(self) -> Iterator[None]:
        previous = getattr(self, "_paused", False)
        self._paused = True
        try:
            yield
        finally:
            self._paused = previous


def _progress(iterable, enabled: bool, label: str):
    if not enabled:
        return iterable
    from histocam.core.progress import track

    return track(iterable, f"{label} forwards")
