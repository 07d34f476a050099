"""Tissue detection on a low-resolution slide thumbnail.

Stained tissue is coloured and the glass is white or grey, so the HSV saturation
S = (max − min) / max of each pixel separates them; the threshold is Otsu's (Otsu, IEEE SMC 1979:
the cut that maximises the between-class variance of the saturation histogram). Objects smaller
than ``min_object`` pixels (dust, debris) are removed and holes smaller than ``max_hole`` pixels
(lumens, tears inside a fragment) are filled. A thumbnail without any saturation contrast is all
tissue when it is coloured (mean S above 0.1) and all glass otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

UNIFORM_SATURATION = 0.1


def saturation(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 -> H×W float32 HSV saturation in [0, 1] (0 for black pixels)."""
    a = rgb.astype(np.float32)
    hi, lo = a.max(axis=2), a.min(axis=2)
    return np.where(hi > 0, (hi - lo) / np.where(hi > 0, hi, 1.0), 0.0).astype(np.float32)


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` without its 8-connected components of fewer than ``min_size`` pixels."""
    if min_size <= 1 or not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def saturation_threshold(rgb: np.ndarray) -> float:
    """The saturation above which a pixel is tissue: Otsu's threshold of the thumbnail's
    saturation, or ``UNIFORM_SATURATION`` when the thumbnail has no saturation contrast (module
    docstring). Applied to level-0 pixels, it is the level-0 tissue test of ``histocam data
    patches``."""
    s = saturation(rgb)
    if float(s.max() - s.min()) < 1e-3:
        return UNIFORM_SATURATION
    return float(threshold_otsu(s))


def tissue_mask(rgb: np.ndarray, min_object: int = 0, max_hole: int = 0) -> np.ndarray:
    """Boolean tissue mask of a thumbnail (module docstring)."""
    s = saturation(rgb)
    if float(s.max() - s.min()) < 1e-3:
        return np.full(s.shape, float(s.mean()) > UNIFORM_SATURATION)
    mask = s > threshold_otsu(s)  # = saturation_threshold(rgb)
    mask = _remove_small(mask, min_object)
    if max_hole > 0:  # holes = background components not touching the border, filled if small
        holes = ~mask & ~_border_connected(~mask)
        mask = mask | (holes & ~_remove_small(holes, max_hole))
    return mask


def _border_connected(background: np.ndarray) -> np.ndarray:
    """The background pixels connected (4-neighbourhood) to the thumbnail's border."""
    labels, _ = ndimage.label(background)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    return np.isin(labels, border)
