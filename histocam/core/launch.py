"""This process's place in a ``torchrun`` launch, read from the environment in one place.

torchrun starts every process with ``RANK`` (its place in the job), ``WORLD_SIZE`` (the number of
processes) and ``LOCAL_RANK`` (its place on its machine, which picks its GPU). A plain process is
rank 0 of 1. Every command reads them through ``launch()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """``rank`` of ``world`` processes; ``local_rank``: the rank on this machine (None: not set)."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and reports."""
        return self.rank == 0

    @property
    def gpu_index(self) -> int | None:
        """The local rank when several processes share the machine's GPUs, else None."""
        return self.local_rank if self.world > 1 else None


def launch() -> Launch:
    """The launch of this process from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (rank 0 of 1 when
    they are unset); a rank outside ``range(world)`` is a ``ValueError``."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = os.environ.get("LOCAL_RANK")
        local_rank = int(local) if local is not None else None
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets "
                         "them)") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Launch(rank, world, local_rank)
