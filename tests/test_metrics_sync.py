"""PixelHistogram.sync() really sums counts across processes (the reference code's multi-GPU
"sync" did nothing; PROTOCOL.md known bugs). Two CPU processes, gloo backend, loopback only.

``run_ranks`` is the shared two-process runner; test_metric_protocol.py runs every metric through it.
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from histocam.metrics import Batch, PxAP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_method() -> str:
    """``fork`` where it is safe: children start in well under a second instead of re-importing
    torch and histocam (~5 s each, more on a loaded machine). ``spawn`` after CUDA is initialised
    (CUDA cannot be used in a forked child) or where fork does not exist."""
    if "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def _rank_main(rank: int, world: int, port: int, target: Callable, args: tuple, out) -> None:
    try:
        torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
        try:
            result = target(rank, world, *args)
        finally:
            dist.destroy_process_group()
        out.put((rank, True, result))
    except BaseException:
        out.put((rank, False, traceback.format_exc()))


def run_ranks(target: Callable, *args: Any, world: int = 2, timeout: float = 120) -> list[Any]:
    """``[target(rank, world, *args) for each rank]``, each rank in its own process of one gloo
    process group; a rank's exception fails the caller with that rank's traceback."""
    ctx = mp.get_context(_start_method())
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, target, args, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        replies = [queue.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    results: list[Any] = [None] * world
    for rank, ok, value in replies:
        assert ok, f"rank {rank} failed:\n{value}"
        results[rank] = value
    return results


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
