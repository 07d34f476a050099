"""A slide map (values on a regular grid over the slide) and masks at other grids: resampling,
block means, masking to tissue, and regions at a threshold, in bounded memory.

A grid is given by its level-0 pixels per grid pixel ``d``: grid pixel (r, c) covers level-0
[c·d, (c+1)·d) × [r·d, (r+1)·d). A mask of another grid is resampled at the centres of the grid's
pixels (nearest), so masking is exact wherever the two grids agree.

Regions (``region_mask``): the map smoothed by a Gaussian of ``smooth_um`` microns (a region's
border follows the map's shape, not the tile grid's steps), thresholded at τ, restricted to
tissue, with holes below ``min_area_um2`` filled and components below it removed (the minimum
area a region must have to be reported).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from histocam.wsi.morphology import fill_holes, remove_small
from histocam.wsi.pyramid import release


def resample_mask(mask: np.ndarray, mask_level0: float, shape: tuple[int, int],
                  grid_level0: float, row0: int = 0) -> np.ndarray:
    """``mask`` (``mask_level0`` level-0 pixels per pixel) at the centres of the pixels of a grid
    of ``grid_level0`` level-0 pixels per pixel: ``shape`` rows and columns from grid row
    ``row0``. A centre past the mask's last pixel (a grid pixel that overhangs the slide's edge)
    takes the nearest one."""
    rows = np.floor((row0 + np.arange(shape[0]) + 0.5) * grid_level0 / mask_level0)
    cols = np.floor((np.arange(shape[1]) + 0.5) * grid_level0 / mask_level0)
    rows = np.minimum(rows.astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(cols.astype(np.int64), mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def mask_map(values: np.ndarray, keep: np.ndarray, band: int = 1024) -> None:
    """values[~keep] = 0, in place, band by band (``values`` may be a memmap)."""
    for r in range(0, values.shape[0], band):
        part = np.asarray(values[r:r + band])
        values[r:r + band] = np.where(keep[r:r + band], part, 0).astype(values.dtype)
        release(values)


def block_mean(values: np.ndarray, k: int, band: int = 256) -> np.ndarray:
    """float32 mean over k×k blocks (edge blocks: the pixels present), band by band."""
    h, w = values.shape
    out = np.empty((math.ceil(h / k), math.ceil(w / k)), np.float32)
    for r in range(0, out.shape[0], band):
        block = np.asarray(values[r * k:(r + band) * k], np.float32)
        rows = math.ceil(block.shape[0] / k)
        padded = np.full((rows * k, out.shape[1] * k), np.nan, np.float32)
        padded[:block.shape[0], :w] = block
        out[r:r + rows] = np.nanmean(padded.reshape(rows, k, out.shape[1], k), axis=(1, 3))
        release(values)
    return out


def region_mask(values: np.ndarray, threshold: float, tissue: np.ndarray, mpp: float, *,
                smooth_um: float, min_area_um2: float) -> np.ndarray:
    """The region of ``values`` (a map of ``mpp`` microns per pixel) at ``threshold`` (module
    docstring)."""
    smooth = ndimage.gaussian_filter(values.astype(np.float32), smooth_um / mpp) \
        if smooth_um / mpp > 0.1 else values
    region = (smooth >= threshold) & tissue
    min_pixels = min_area_um2 / (mpp * mpp)
    return remove_small(fill_holes(region, min_pixels), min_pixels)


def _linear(n_out: int, out_level0: float, in_level0: float, n_in: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left index, right index, right weight) of linear interpolation at the centres of ``n_out``
    pixels of ``out_level0`` level-0 pixels, on ``n_in`` pixels of ``in_level0`` (clamped)."""
    x = (np.arange(n_out) + 0.5) * out_level0 / in_level0 - 0.5
    x = np.clip(x, 0.0, n_in - 1.0)
    left = np.floor(x).astype(np.int64)
    right = np.minimum(left + 1, n_in - 1)
    return left, right, (x - left).astype(np.float32)


def resample_values(values: np.ndarray, values_level0: float, shape: tuple[int, int],
                    grid_level0: float) -> np.ndarray:
    """``values`` (``values_level0`` level-0 pixels per pixel) interpolated bilinearly at the
    centres of the pixels of a grid of ``shape`` and ``grid_level0`` (edges: the nearest value),
    one axis at a time (no coordinate arrays of the output's size)."""
    v = np.asarray(values, np.float32)
    c0, c1, cw = _linear(shape[1], grid_level0, values_level0, v.shape[1])
    rows = v[:, c0] * (1.0 - cw) + v[:, c1] * cw
    r0, r1, rw = _linear(shape[0], grid_level0, values_level0, v.shape[0])
    return rows[r0] * (1.0 - rw[:, None]) + rows[r1] * rw[:, None]
