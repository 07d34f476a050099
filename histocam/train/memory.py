"""Evaluation batches sized to a memory budget.

A pass that makes maps holds, per image, the network's activations and everything the method
builds from them: a top-down CAM keeps the graph from its target stages until its backward pass
is done, and the test-time views (``method.map_tta``) run one after the other, each with its own
activations. How much that is depends on the method, the backbone, the image size and the views,
so a fixed evaluation batch is either wasteful or too large: 64 GlaS images of 448 px through
EfficientNet-Lite0 with LayerCAM and the 8 views of ``d8`` are over 19 GB.

``fit_batch`` measures one image's pass instead: ``peak_tensor_bytes`` runs the method's map (or
its forward, for a pass without maps) on one image of the evaluated size under a dispatch mode that
sees every tensor storage the pass allocates, on any device, and when each is freed (autograd's
saved tensors and the backward's gradients included), and keeps the largest total alive at once.
The weights, allocated before, are not counted. A batch of B images holds about B times that
(samples do not interact in an evaluation pass), so the batch is the largest whose B × peak fits
the budget, and never more than the batch asked for.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from histocam.methods.base import WSOLMethod

#: Bytes of tensors an evaluation batch may hold at once (``fit_batch``'s default budget).
EVAL_MEMORY_BUDGET = 2 * 1024 ** 3


class _PeakTensorBytes(TorchDispatchMode):
    """Tracks the bytes of the storages that the operations under it allocate, while they live
    (a storage's Python object lives exactly as long as the storage, so a finalizer on it runs when
    the memory is released)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: set[int] = set()
        self.current = 0
        self.peak = 0

    def _release(self, key: int, nbytes: int) -> None:
        self.live.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                storage = t.untyped_storage()
                if id(storage) not in self.live:
                    self.live.add(id(storage))
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._release, id(storage), storage.nbytes())
        self.peak = max(self.peak, self.current)
        return out


def peak_tensor_bytes(method: WSOLMethod, image_size: int, device: torch.device | str, *,
                      localize: bool = True) -> int:
    """The most bytes of tensors alive at once while ``method`` (in eval mode) maps one
    ``image_size``² image with its test-time views (``localize_with_logits``) or, with
    ``localize=False``, classifies it. The global random generators are left as they were."""
    device = torch.device(device)
    was_training = method.training
    method.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(0)
            image = torch.rand(1, 3, image_size, image_size, device=device)
            label = torch.zeros(1, dtype=torch.long, device=device)
            tracker = _PeakTensorBytes()
            with tracker:
                if localize:
                    method.localize_with_logits(image, label)
                else:
                    method(image)
    finally:
        method.train(was_training)
    return tracker.peak + image.numel() * image.element_size()


def fit_batch(method: WSOLMethod, image_size: int, device: torch.device | str, *, limit: int,
              localize: bool = True, budget: int | None = None) -> int:
    """The largest batch (at most ``limit``, at least 1) whose images' passes fit ``budget``
    bytes (default ``EVAL_MEMORY_BUDGET``; module docstring)."""
    if limit < 1:
        raise ValueError(f"batch size limit must be at least 1, got {limit}")
    budget = EVAL_MEMORY_BUDGET if budget is None else budget
    per_image = peak_tensor_bytes(method, image_size, device, localize=localize)
    return max(1, min(limit, budget // max(per_image, 1)))
