"""One protocol for every streaming metric: ``update``, ``compute``, ``reset``, ``merge``, ``sync``.

Every metric takes the same ``Batch`` in ``update``: the images' ids and labels, the classifier's
scores, the maps with their masks and the encoder's features. A metric reads the fields it names in
``needs``; an evaluation pass (``histocam.train.split_pass.evaluate_split``) computes a field only
when a metric of its collection needs it, and feeds every metric of the collection the same batch.

Evaluation may be split over the processes of ``torch.distributed`` (one shard of the split per
rank). A metric is only correct if its dataset-level result is computed from the whole split, so
every metric keeps a mergeable state:

- ``merge(other)`` adds the state of another instance of the same type in place (exactly: merged
  ``compute()`` equals the ``compute()`` of one instance fed all the data, in the same order);
- ``sync()`` merges the states of all ranks of the default process group, so that afterwards every
  rank holds the same, whole-split state (the reference code's multi-GPU "sync" did nothing and
  every rank reported its own shard's metrics; docs/protocol.md, "Deviations from the papers").

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import torch

from histocam.core.collectives import all_gather_objects

M = TypeVar("M", bound="Metric")

#: The fields of a ``Batch`` an evaluation pass computes on demand (``Metric.needs``).
COMPUTED = ("logits", "maps", "features")


@dataclass(frozen=True)
class Batch:
    """One step of an evaluation, as every metric receives it.

    ``ids`` (optional: errors then name images by position) and ``labels`` (B class indices) name
    the images; ``logits`` are the classifier's B×K
    scores (B predicted classes also do); ``maps`` (B×H×W in [0, 1]) are the maps of each image's
    ground-truth class and ``masks`` (B×H×W, bool or {0, 1}) their ground truth; ``annotated`` (B,
    bool) says which images have a mask (None: all of them); ``ignore`` (B×H×W, bool or {0, 1}:
    True = the pixel counts for no localisation metric, as the 255 pixels of the reference
    evaluator's masks); ``features`` (B×d×h×w) is the encoder's last feature map of the annotated
    images (rows of the others are not read). Fields a metric does not need may be None.
    """

    ids: Sequence[str] | None = None
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    maps: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    annotated: torch.Tensor | None = None
    ignore: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def require(self, metric: Metric, *names: str) -> None:
        """Raise ``ValueError`` naming ``metric`` and the fields it needs that this batch lacks."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{type(metric).__name__} needs the batch's {', '.join(missing)}")

    def select(self, keep: torch.Tensor) -> Batch:
        """The images where ``keep`` (B, bool) is True, every field restricted to them."""
        keep = keep.to(torch.bool)
        ids = None if self.ids is None else [i for i, k in zip(self.ids, keep.tolist()) if k]

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return t[keep.to(t.device)] if t is not None else None

        return Batch(ids, pick(self.labels), pick(self.logits), pick(self.maps), pick(self.masks),
                     pick(self.annotated), pick(self.ignore), pick(self.features))

    @cached_property
    def localized(self) -> Batch:
        """The images with a mask: what the localisation metrics are computed on."""
        if self.annotated is None:
            return self
        return replace(self.select(self.annotated), annotated=None)


class Metric(ABC):
    """A streaming metric whose state merges exactly across instances and processes.

    Subclasses say which computed fields of a ``Batch`` they read (``needs``) and implement
    ``update`` (add a batch), ``compute`` (the result of everything added so
    far; must not change the state and must work on an empty metric, possibly by raising the same
    error as a fresh instance), ``reset`` (back to the empty state, keeping the configuration) and
    ``merge`` (in-place sum of an instance of the same type and configuration, returning ``self``).
    ``sync`` gathers whole metrics (which must then be picklable) and merges them in rank order;
    metrics whose state is count tensors override it with an ``all_reduce``.
    """

    #: the ``Batch`` fields this metric reads among those a pass computes (``COMPUTED``)
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def update(self, batch: Batch) -> None:
        """Add one batch to the state."""

    @abstractmethod
    def compute(self) -> Any:
        """The metric's result for the state so far."""

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
