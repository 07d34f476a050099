"""Overlap blending of tile maps into one slide map, without seams, in bounded memory.

Tiles of n map pixels overlap by o ≤ n/2 (stride n − o). Each tile's map is weighted by the
separable window w(y)·w(x) with w(i) = sin²(π/2 · (i + ½)/o) on its first o pixels, 1 in the
middle and the mirror image on its last o pixels. Where two tiles overlap, the falling ramp of one
and the rising ramp of the next are cos² and sin² of the same angle, so the weights sum to 1 (a
partition of unity, also where four tiles meet: (w_a + w_b)(w_c + w_d) = 1); at slide edges and
next to tiles left out (no tissue) the sum is smaller and the division by it restores the tile's
own value. The stitched map is Σ w·m / Σ w (0 where no tile lies). A map that is a function of the
pixels alone is therefore reproduced exactly, whatever the tile size and overlap.

A tile that gives one value (its class probability) is blended with ``centre_window`` instead: a
separable triangle 1 − |x − c| / s around the tile's centre c, as wide as two strides s. Triangles
one stride apart sum to 1, so between tile centres the map is the bilinear interpolation of the
tiles' values: smooth, with no trace of the tiles' squares, and uniform over a uniform region.

The two sums are float32 ``numpy.memmap`` files when a folder is given, so a slide's map never has
to fit in memory; the result is written band by band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histocam.wsi.pyramid import release

RELEASE_EVERY = 64  # tiles blended between two releases of the accumulators' pages


def ramp_window(n: int, overlap: int) -> np.ndarray:
    """The 1-D blending window of a tile of ``n`` pixels overlapping its neighbours by ``overlap``."""
    if not 0 <= overlap <= n // 2:
        raise ValueError(f"overlap {overlap} must be between 0 and half the tile ({n // 2})")
    w = np.ones(n, dtype=np.float64)
    if overlap:
        rise = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = rise
        w[n - overlap:] = rise[::-1]
    return w


def tile_window(n: int, overlap: int) -> np.ndarray:
    """n×n float32 separable window w(y)·w(x)."""
    w = ramp_window(n, overlap)
    return np.outer(w, w).astype(np.float32)


def centre_window(n: int, stride: int) -> tuple[np.ndarray, int]:
    """(the separable triangle of half-width ``stride`` around the centre of an n-pixel tile
    (module docstring), the offset of its first pixel from the tile's first pixel)."""
    if stride < 1:
        raise ValueError(f"stride {stride} must be at least 1")
    centre = n / 2
    first = int(np.floor(centre - stride))
    x = np.arange(first, int(np.ceil(centre + stride))) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(x - centre) / stride)
    return np.outer(w, w).astype(np.float32), first


class Stitcher:
    """Accumulates Σ w·m and Σ w over a map of ``shape`` (rows, cols) from n×n tile maps, or from
    one value per tile with ``values=True`` (``centre_window``)."""

    def __init__(self, shape: tuple[int, int], n: int, overlap: int,
                 folder: Path | None = None, values: bool = False) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        if values:
            self.window, self.offset = centre_window(n, n - overlap)
        else:
            self.window, self.offset = tile_window(n, overlap), 0
        self.n = n
        self.added = 0
        if folder is None:
            self.num = np.zeros(self.shape, np.float32)
            self.den = np.zeros(self.shape, np.float32)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.num = np.memmap(folder / "sum-wm.f32", np.float32, "w+", shape=self.shape)
            self.den = np.memmap(folder / "sum-w.f32", np.float32, "w+", shape=self.shape)

    def add(self, row: int, col: int, tile_map: np.ndarray | float) -> None:
        """Blend the tile whose top-left pixel is at (row, col) of the map: its n×n map, or its
        one value (``values=True``); parts outside the map are dropped."""
        size = self.window.shape[0]
        if np.ndim(tile_map) and np.shape(tile_map) != (size, size):
            raise ValueError(f"tile map of shape {np.shape(tile_map)}, expected {(size, size)}")
        top, left = row + self.offset, col + self.offset
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + size, self.shape[0]), min(left + size, self.shape[1])
        if r1 <= r0 or c1 <= c0:
            return
        w = self.window[r0 - top:r1 - top, c0 - left:c1 - left]
        part = np.float32(tile_map) if not np.ndim(tile_map) else \
            np.asarray(tile_map, np.float32)[r0 - top:r1 - top, c0 - left:c1 - left]
        self.num[r0:r1, c0:c1] += w * part
        self.den[r0:r1, c0:c1] += w
        self.added += 1
        if self.added % RELEASE_EVERY == 0:
            release(self.num)
            release(self.den)

    def write(self, out: np.ndarray, band: int = 1024) -> np.ndarray:
        """Σ w·m / Σ w into ``out`` (any array of ``shape``, e.g. a float16 memmap), band by band;
        0 where no tile lies."""
        for r in range(0, self.shape[0], band):
            num, den = np.asarray(self.num[r:r + band]), np.asarray(self.den[r:r + band])
            out[r:r + band] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
            for array in (self.num, self.den, out):
                release(array)
        return out

    def close(self) -> None:
        for acc in (self.num, self.den):
            if isinstance(acc, np.memmap):
                acc.flush()
        self.num = self.den = None
