"""Torch datasets and loaders over histocam datasets, with bad samples skipped or fatal.

A bad sample is a user's file that cannot be used (``DataError``, an unreadable image): with
``on_bad_sample="skip"`` it is logged and dropped from its batch, and the trainer stops a run in
which too many are (``train.max_bad_fraction``). An I/O error on histocam's own files
(``StorageError``: a cache on a full disk) is never a bad sample: it stops the pass, as does any
bad sample with ``on_bad_sample="error"``. Such an error is carried out of the DataLoader worker
as it is and raised by the ``Loader`` in the main process (torch would turn it into a
``RuntimeError`` holding the worker's traceback).

The training loader is built for exact resume and for distributed training alike:

- the order of epoch ``e`` is torch's ``DistributedSampler`` permutation of (seed, e) (one replica
  when not distributed), so rank ``r`` of ``N`` gets every ``N``-th index of the same permutation and
  the union of the ranks' ``k``-th batches (``batch_size / N`` each) is the one-process ``k``-th batch;
- the augmentation of a sample is seeded by (seed, e, index) (``seeding.sample_seed``): the same
  whatever the worker, the rank, or a resume in the middle of the epoch;
- ``skip_batches`` starts the epoch after the batches a resumed run has already trained on.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler
from torch.utils.data.dataloader import default_collate

from histocam.data.errors import DataError, StorageError
from histocam.data.transforms import JointTransform
from histocam.train.seeding import sample_seed

log = logging.getLogger("histocam")


class TransformedDataset(Dataset):
    """Applies a ``JointTransform`` to each sample; ``cams`` (id -> map) are transformed jointly.

    With ``on_bad_sample="skip"`` an unreadable sample is logged once (file and reason) and dropped
    from its batch; with ``"error"`` the ``DataError`` propagates. With ``seed`` set, the random
    augmentation of sample ``index`` in ``epoch`` depends on (seed, epoch, index) only.
    """

    def __init__(self, dataset, transform: JointTransform, on_bad_sample: str = "error",
                 cams: Any = None, seed: int | None = None, epoch: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.on_bad_sample = on_bad_sample
        self.cams = cams
        self.seed = seed
        self.epoch = epoch
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            sample = self.dataset[index]
        except StorageError as exc:
            return Failure(exc)
        except (DataError, OSError, ValueError) as exc:
            if self.on_bad_sample == "error":
                return Failure(exc)
            if index not in self._reported:
                self._reported.add(index)
                log.warning("skipping bad sample #%d: %s", index, exc)
            return None
        cam = self.cams.get(sample.id) if self.cams is not None else None
        if self.seed is None:
            out = self.transform(sample, cam)
        else:
            seed = sample_seed(self.seed, self.epoch, index)
            # global torch RNG too (colour jitter draws from it), restored afterwards
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = self.transform(sample, cam, generator=torch.Generator().manual_seed(seed))
        out["index"] = index
        return out


class Failure:
    """An error that stops the pass, as a sample: a DataLoader worker hands it to the main
    process whole (it is pickled with its type, file and reason)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def collate_skipping_none(batch: list) -> dict[str, Any] | Failure | None:
    """The batch without its skipped samples (None when none is left), or its first failure."""
    failure = next((b for b in batch if isinstance(b, Failure)), None)
    if failure is not None:
        return failure
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


class Loader(DataLoader):
    """A DataLoader whose failures (``Failure``) are raised in the main process, as raised. Its
    iterator is made when ``iter`` is called, as a DataLoader's (which draws its workers' base
    seed from the global generator then: a resumed epoch restores that generator afterwards)."""

    def __iter__(self):
        return _RaisingFailures(super().__iter__())


class _RaisingFailures:
    def __init__(self, batches) -> None:
        self.batches = batches

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.batches)
        if isinstance(batch, Failure):
            raise batch.error
        return batch


#: The splits a training run reads, and why each must hold images.
TRAINING_SPLITS = {"train": "there is nothing to train on",
                   "valcl": "B-CL is selected on its classification accuracy",
                   "valpx": "B-LOC is selected on the PxAP of its images with masks (give some "
                            "valcl images a mask)"}


def check_training_splits(source, dataset: str) -> None:
    """A ``DataError`` naming the first split of ``TRAINING_SPLITS`` without images."""
    for split, why in TRAINING_SPLITS.items():
        if len(source.dataset(split)) == 0:
            raise DataError(None, f"split {split!r} of {source.name} ({dataset}) has no image: "
                            f"{why}")


def check_bad_samples(dataset, total: int, bad: int, limit: float, when: str) -> None:
    """A ``DataError`` when more than ``limit`` (a share) of the ``total`` samples of ``dataset``
    that a pass tried, or all of them, were ``bad`` (unreadable): a run that learns or selects on
    (almost) nothing stops and says so, instead of finishing as if it had worked."""
    if total and (bad == total or bad > limit * total):
        what = f"all {total}" if bad == total else f"{bad} of the {total}"
        raise DataError(None, f"{what} {dataset.split} samples of {dataset.name} {when} were "
                        f"unreadable and skipped (train.max_bad_fraction is {limit:g}, and a run "
                        "never goes on with none): the run stopped; the warnings above name the "
                        "files")


def make_loader(dataset, transform: JointTransform, batch_size: int, *, shuffle: bool,
                num_workers: int, seed: int = 0, on_bad_sample: str = "error", cams: Any = None,
                drop_last: bool = False, indices: list[int] | None = None) -> Loader:
    """A loader whose shuffling (and worker seeds) depend only on ``seed``; ``indices`` restricts
    it to those samples (in that order; e.g. one rank's shard of an evaluation split)."""
    generator = torch.Generator().manual_seed(seed)
    data = TransformedDataset(dataset, transform, on_bad_sample, cams)
    return Loader(
        data if indices is None else torch.utils.data.Subset(data, indices),
        batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        collate_fn=collate_skipping_none, generator=generator, drop_last=drop_last,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )


def train_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                  world: int = 1, drop_last: bool = False) -> list[list[int]]:
    """The sample indices of each of ``rank``'s batches in ``epoch`` (``batch_size`` per rank)."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return [list(b) for b in BatchSampler(list(sampler), batch_size, drop_last)]


def make_train_loader(dataset, transform: JointTransform, batch_size: int, *, seed: int,
                      epoch: int, num_workers: int, rank: int = 0, world: int = 1,
                      skip_batches: int = 0, drop_last: bool = False,
                      on_bad_sample: str = "error", cams: Any = None) -> Loader:
    """The training loader of ``rank`` for ``epoch`` (``batch_size`` per rank), starting after
    ``skip_batches`` batches (a resumed epoch)."""
    batches = train_batches(len(dataset), batch_size, seed=seed, epoch=epoch, rank=rank,
                            world=world, drop_last=drop_last)[skip_batches:]
    data = TransformedDataset(dataset, transform, on_bad_sample, cams, seed=seed, epoch=epoch)
    return Loader(data, batch_sampler=batches, num_workers=num_workers,
                  collate_fn=collate_skipping_none, persistent_workers=False,
                  pin_memory=torch.cuda.is_available())
