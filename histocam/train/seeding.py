"""Seeds, deterministic mode, and the random state a checkpoint carries for an exact resume.

Two kinds of randomness in training, seeded differently:

- **data** (crop, flips, colour jitter, stain augmentation of each sample): a pure function of
  ``(run seed, epoch, sample index)`` (``sample_seed``), whatever the number of loader workers, the
  worker a sample lands on, the rank that loads it, or where a run was resumed;
- **model** (dropout, a method's own draws in ``prepare_batch``): the process-global generators,
  re-seeded at every epoch start (``epoch_seed``) and captured whole (``rng_state``) in every
  checkpoint that a run may resume from.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

_EPOCH_STRIDE = 100_003  # epochs of different seeds never share a seed below ~1e5 epochs
_RANK_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the process-global generators at the start of ``epoch`` on ``rank``."""
    return seed * _EPOCH_STRIDE + epoch + _RANK_STRIDE * rank


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the augmentation of sample ``index`` in ``epoch`` (64-bit mix, so that nearby
    (seed, epoch, index) triples give unrelated streams)."""
    x = (0x632BE59BD9B4E019 + seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9
         + index * 0x94D049BB133111EB)
    x &= (1 << 64) - 1
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & ((1 << 64) - 1)
    x ^= x >> 32
    return x & ((1 << 63) - 1)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every process-global generator: Python, NumPy, torch CPU and ``device``'s if it is a GPU.

    Only tensors, ints, strings and lists, so that it loads with ``weights_only=True``.
    """
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what ``rng_state`` captured."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (errors on ops that have none) and no cuDNN autotuning."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
