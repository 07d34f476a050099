"""Torch datasets and loaders over histocam datasets, with bad samples skipped or fatal."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import default_collate

from histocam.data.errors import DataError
from histocam.data.transforms import JointTransform

log = logging.getLogger("histocam")


class TransformedDataset(Dataset):
    """Applies a ``JointTransform`` to each sample; ``cams`` (id -> map) are transformed jointly.

    With ``on_bad_sample="skip"`` an unreadable sample is logged once (file and reason) and dropped
    from its batch; with ``"error"`` the ``DataError`` propagates.
    """

    def __init__(self, dataset, transform: JointTransform, on_bad_sample: str = "error",
                 cams: Any = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self.on_bad_sample = on_bad_sample
        self.cams = cams
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            sample = self.dataset[index]
        except (DataError, OSError, ValueError) as exc:
            if self.on_bad_sample == "error":
                raise
            if index not in self._reported:
                self._reported.add(index)
                log.warning("skipping bad sample #%d: %s", index, exc)
            return None
        cam = self.cams.get(sample.id) if self.cams is not None else None
        out = self.transform(sample, cam)
        out["index"] = index
        return out


def collate_skipping_none(batch: list) -> dict[str, Any] | None:
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


def make_loader(dataset, transform: JointTransform, batch_size: int, *, shuffle: bool,
                num_workers: int, seed: int = 0, on_bad_sample: str = "error", cams: Any = None,
                drop_last: bool = False) -> DataLoader:
    """A loader whose shuffling (and worker seeds) depend only on ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TransformedDataset(dataset, transform, on_bad_sample, cams),
        batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        collate_fn=collate_skipping_none, generator=generator, drop_last=drop_last,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )
