"""The one sample record that every reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Sample:
    """One image with its image-level label and optional pixel mask.

    Attributes:
        image: H×W×3 ``uint8`` RGB array.
        label: integer class index in the dataset's encoding.
        mask: H×W ``bool`` foreground mask, or ``None`` when the sample has no pixel annotation.
            An all-background sample (e.g. a CAMELYON16 normal patch) has an all-False mask.
        id: identifier unique within the dataset (the list path for WSOL lists).
        path: source image file, ``None`` for procedurally generated samples.
        warnings: conversions applied while reading (e.g. RGBA -> RGB).
        ignore: H×W ``bool`` mask of pixels left out of the localisation metrics (WSOL
            ``localization.txt``'s ignore path), or ``None`` (nothing ignored). Only with a mask, and
            disjoint from its foreground (readers remove the foreground from the ignore region).
    """

    image: np.ndarray
    label: int
    mask: np.ndarray | None
    id: str
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    ignore: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"{self.id}: image must be H×W×3 uint8, got {self.image.shape} {self.image.dtype}"
            )
        if self.mask is not None:
            if self.mask.dtype != np.bool_:
                raise ValueError(f"{self.id}: mask must be bool, got {self.mask.dtype}")
            if self.mask.shape != self.image.shape[:2]:
                raise ValueError(
                    f"{self.id}: mask size {self.mask.shape} != image size {self.image.shape[:2]}"
                )
        if self.ignore is not None:
            if self.mask is None:
                raise ValueError(f"{self.id}: an ignore mask needs a mask")
            if self.ignore.dtype != np.bool_:
                raise ValueError(f"{self.id}: ignore mask must be bool, got {self.ignore.dtype}")
            if self.ignore.shape != self.image.shape[:2]:
                raise ValueError(f"{self.id}: ignore mask size {self.ignore.shape} != image size "
                                 f"{self.image.shape[:2]}")
            if (self.ignore & self.mask).any():
                raise ValueError(f"{self.id}: ignore mask overlaps the foreground")
