"""The job's process group and the collectives every layer uses (metrics, map stores, training).

Every command joins one process group under ``torchrun`` (``setup``: idempotent, the group lives
until the process exits). Without a group every function here is the one-process identity:
``all_reduce_sum`` returns its tensor, ``all_gather_objects`` a one-element list, ``barrier`` does
nothing, ``shard_indices(n)`` is ``range(n)``.

Sharded passes give each rank a contiguous block of the images (``shard_indices``), in rank order,
so concatenating every rank's records in rank order (``all_gather_objects``) gives them in dataset
order, as one process makes them. With the NCCL backend, CPU tensors are reduced through the current
CUDA device (``torch.cuda.set_device(local_rank)`` first, as torch requires).
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from histocam.core.launch import launch


def distributed_ready() -> bool:
    """True when the default ``torch.distributed`` process group exists."""
    return dist.is_available() and dist.is_initialized()


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world``. ``owns_group``: the caller must
    destroy the group itself when done (``teardown``); never set by ``setup``, whose groups live
    until the process ends."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> DistContext:
    """Join the job: the existing default process group, or a new one from torchrun's environment
    (NCCL when ``device`` is a GPU, else gloo); a plain process is rank 0 of 1.

    Idempotent, so that one command makes one group: every ``Trainer``, evaluation and map export
    of a command (``histocam pipeline pixelcam``: train, export, train, evaluate) joins the group
    the first of them made. A group made here lives until the process ends (destroyed by an exit
    hook), not until its maker is done: torch cannot reliably make the default group again in the
    same job (``destroy_process_group`` resets the group counter, so the new group's rendezvous
    reads the old one's stale keys: "Connection refused" in about one try out of four)."""
    job = launch()
    if distributed_ready():
        return DistContext(dist.get_rank(), dist.get_world_size(), job.local_rank)
    if job.world <= 1:
        return DistContext()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(_destroy_at_exit)
    return DistContext(dist.get_rank(), dist.get_world_size(), job.gpu_index)


def _destroy_at_exit() -> None:
    if distributed_ready():
        dist.destroy_process_group()


def teardown(ctx: DistContext) -> None:
    """Destroy the group if the caller owns it (``owns_group``; a group made by ``setup`` is
    destroyed when the process ends)."""
    if ctx.owns_group and distributed_ready():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank: in the default process group, else torchrun's (before the group is
    made), else 0."""
    if distributed_ready():
        return dist.get_rank()
    return launch().rank


def is_main() -> bool:
    """Rank 0 of the job, or a plain process: the one that writes files and reports."""
    return rank() == 0


def shard_indices(n: int) -> list[int]:
    """This rank's shard of ``range(n)``: a contiguous block, the blocks in rank order and balanced
    (sizes differ by at most one), so that records gathered in rank order are in dataset order.
    All of ``range(n)`` without a process group."""
    if not distributed_ready():
        return list(range(n))
    world, r = dist.get_world_size(), dist.get_rank()
    return list(range(r * n // world, (r + 1) * n // world))


def collective_device(fallback: torch.device) -> torch.device:
    """Where a collective's tensors live: the current CUDA device under NCCL, else ``fallback``."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback


def barrier() -> None:
    if distributed_ready():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``tensor`` over all ranks (a new tensor on ``tensor``'s device)."""
    if not distributed_ready():
        return tensor
    work = tensor.clone()
    if work.device.type == "cpu" and dist.get_backend() == "nccl":
        work = work.to(collective_device(work.device))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects, rank order). Every entry, the
    caller's own included, is a fresh unpickled copy when distributed."""
    if not distributed_ready():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a collective; picklable objects)."""
    if not distributed_ready():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ranks(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (a collective: every rank must call it)."""
    if not distributed_ready():
        return flag
    t = torch.tensor([int(flag)], device=collective_device(torch.device("cpu")))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
