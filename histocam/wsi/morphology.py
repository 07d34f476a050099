"""Binary morphology of slide masks (tissue, regions): closing, hole filling, small-object removal.

Sizes are in mask pixels; callers convert microns with the mask's µm per pixel. Connectivity: objects
are 8-connected (a diagonal step joins two pixels of tissue), holes are 4-connected background
components that do not touch the mask's border (background reaching the border is glass, never a
hole).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), bool)


def disk(radius: int) -> np.ndarray:
    """(2r+1)×(2r+1) boolean disk: the pixels whose centre is within ``radius`` of the middle."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def close(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological closing by a disk (dilation then erosion); the mask is padded with background
    first, so that the border does not erode what touches it."""
    if radius < 1 or not mask.any():
        return mask
    padded = np.pad(mask, radius)
    closed = ndimage.binary_closing(padded, disk(radius))
    return closed[radius:-radius, radius:-radius]


def remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_pixels`` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=EIGHT)
    keep = np.bincount(labels.ravel(), minlength=count + 1) >= min_pixels
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    """``mask`` with its holes (module docstring) of fewer than ``max_pixels`` pixels filled."""
    if max_pixels <= 0 or mask.all():
        return mask
    labels, count = ndimage.label(~mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    fill = sizes < max_pixels
    fill[0] = False
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    fill[border] = False
    return mask | fill[labels]
