"""Devices: ``auto``/``cpu``/``cuda`` as a ``torch.device``, the rank's own GPU under torchrun."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from histocam.core.launch import launch


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto``/``cpu``/``cuda``; with ``local_rank``, ``cuda`` is that rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def command_device(name: str) -> torch.device:
    """The device named ``name`` for this process: under torchrun, ``cuda`` is the rank's own GPU
    (``LOCAL_RANK``)."""
    return resolve_device(name, launch().gpu_index)


@contextmanager
def one_cpu_thread() -> Iterator[None]:
    """torch on one CPU thread inside, the previous count restored after (small work where more
    threads only contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
