"""PixelHistogram.sync() really sums counts across processes (the reference code's multi-GPU
"sync" did nothing; docs/protocol.md, "Deviations from the papers"). Two CPU processes, gloo
backend, loopback only (``helpers.run_ranks``)."""

from __future__ import annotations

import torch
from helpers import run_ranks

from histocam.metrics import Batch, PxAP


def _data(rank: int) -> Batch:
    g = torch.Generator().manual_seed(rank)
    return Batch(maps=torch.rand(3, 7, 11, generator=g), masks=torch.rand(3, 7, 11, generator=g) > 0.5)


def _pxap_rank(rank: int, world: int) -> tuple[float, int]:
    acc = PxAP()
    acc.update(_data(rank))
    acc.sync()
    return acc.compute(), acc.n_images


def test_sync_sums_counts_across_processes() -> None:
    results = run_ranks(_pxap_rank)
    whole = PxAP()
    for rank in range(2):
        whole.update(_data(rank))
    for value, n in results:
        assert n == 6
        assert abs(value - whole.compute()) < 1e-9
