"""PixelHistogram.sync() really sums counts across processes (the reference code's multi-GPU
"sync" did nothing; PROTOCOL.md known bugs). Two CPU processes, gloo backend, loopback only."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from histocam.metrics import PxAP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(rank: int):
    g = torch.Generator().manual_seed(rank)
    return torch.rand(3, 7, 11, generator=g), torch.rand(3, 7, 11, generator=g) > 0.5


def _worker(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    acc = PxAP()
    acc.update(*_data(rank))
    acc.sync()
    out.put((rank, acc.compute(), acc.n_images))
    dist.destroy_process_group()


def test_sync_sums_counts_across_processes() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    whole = PxAP()
    for rank in range(2):
        whole.update(*_data(rank))
    for _, value, n in results:
        assert n == 6
        assert abs(value - whole.compute()) < 1e-9
