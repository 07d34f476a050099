"""One protocol for every streaming metric: ``update``, ``compute``, ``reset``, ``merge``, ``sync``.

Evaluation may be split over the processes of ``torch.distributed`` (one shard of the split per
rank). A metric is only correct if its dataset-level result is computed from the whole split, so
every metric keeps a mergeable state:

- ``merge(other)`` adds the state of another instance of the same type in place (exactly: merged
  ``compute()`` equals the ``compute()`` of one instance fed all the data, in the same order);
- ``sync()`` merges the states of all ranks of the default process group, so that afterwards every
  rank holds the same, whole-split state (the reference code's multi-GPU "sync" did nothing and
  every rank reported its own shard's metrics; PROTOCOL.md, "Known bugs of the reference code").

Two kinds of state, two collectives (``histocam.core.collectives``):

- integer count tensors (histograms, confusion matrices) are summed with ``all_reduce``: exact and
  order-free;
- lists of per-image Python records are gathered with ``all_gather_object`` and concatenated in
  **rank order** (rank 0's records, then rank 1's, ...). That is ``Metric.sync``'s default: gather
  every rank's metric, then ``reset`` and ``merge`` them in rank order, so a metric whose ``merge``
  is exact gets an exact ``sync`` for free.

``sync`` is a no-op when ``torch.distributed`` is unavailable or not initialised. It is a
collective: every rank must call it, once, before ``compute`` (a second call would merge the
already-merged states again). With the NCCL backend the object gather uses the current CUDA device
(``torch.cuda.set_device(local_rank)`` first, as torch requires) and CPU count tensors are reduced
through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

from histocam.core.collectives import all_gather_objects

M = TypeVar("M", bound="Metric")


class Metric(ABC):
    """A streaming metric whose state merges exactly across instances and processes.

    Subclasses implement ``update`` (add a batch), ``compute`` (the result of everything added so
    far; must not change the state and must work on an empty metric, possibly by raising the same
    error as a fresh instance), ``reset`` (back to the empty state, keeping the configuration) and
    ``merge`` (in-place sum of an instance of the same type and configuration, returning ``self``).
    ``sync`` gathers whole metrics (which must then be picklable) and merges them in rank order;
    metrics whose state is count tensors override it with an ``all_reduce``.
    """

    @abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add one batch to the state."""

    @abstractmethod
    def compute(self) -> Any:
        """The metric's result (a dict, except ``PxAP``'s historical float) for the state so far."""

    @abstractmethod
    def reset(self) -> None:
        """Empty the state (configuration such as thresholds or class names is kept)."""

    @abstractmethod
    def merge(self: M, other: M) -> M:
        """Add ``other``'s state to this one, in place (``other`` after ``self``); returns ``self``."""

    def sync(self: M) -> M:
        """Merge the states of all ranks in rank order, on every rank; no-op when not distributed."""
        parts = all_gather_objects(self)
        if len(parts) == 1:
            return self
        self.reset()
        for part in parts:
            self.merge(part)
        return self

    def _check_mergeable(self, other: Metric, **config: Any) -> None:
        """Raise unless ``other`` has exactly this type and the same values of ``config``'s attributes."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name, mine in config.items():
            theirs = getattr(other, name)
            if theirs != mine:
                raise ValueError(f"cannot merge {type(self).__name__}s with different {name}: "
                                 f"{mine!r} != {theirs!r}")
