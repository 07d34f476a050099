"""Overlap blending of tile maps into one slide map, without seams, in bounded memory.

Tiles of n map pixels overlap by o ≤ n/2 (stride n − o). Each tile's map is weighted by the
separable window w(y)·w(x) with w(i) = sin²(π/2 · (i + ½)/o) on its first o pixels, 1 in the
middle and the mirror image on its last o pixels. Where two tiles overlap, the falling ramp of one
and the rising ramp of the next are cos² and sin² of the same angle, so the weights sum to 1 (a
partition of unity, also where four tiles meet: (w_a + w_b)(w_c + w_d) = 1); at slide edges and
next to tiles left out (no tissue) the sum is smaller and the division by it restores the tile's
own value. The stitched map is Σ w·m / Σ w (0 where no tile lies). A map that is a function of the
pixels alone is therefore reproduced exactly, whatever the tile size and overlap.

The two sums are float32 ``numpy.memmap`` files when a folder is given, so a slide's map never has
to fit in memory; the result is written band by band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histocam.data.pyramid import release  # re-exported: the memmap page release of the map writers

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


class Stitcher:
    """Accumulates Σ w·m and Σ w over a map of ``shape`` (rows, cols) from n×n tile maps."""

    def __init__(self, shape: tuple[int, int], n: int, overlap: int,
                 folder: Path | None = None) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.window = tile_window(n, overlap)
        self.n = n
        self.added = 0
        if folder is None:
            self.num = np.zeros(self.shape, np.float32)
            self.den = np.zeros(self.shape, np.float32)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.num = np.memmap(folder / "sum-wm.f32", np.float32, "w+", shape=self.shape)
            self.den = np.memmap(folder / "sum-w.f32", np.float32, "w+", shape=self.shape)

    def add(self, row: int, col: int, tile_map: np.ndarray) -> None:
        """Blend an n×n map whose top-left pixel is at (row, col) of the map (parts outside the
        map are dropped)."""
        if tile_map.shape != (self.n, self.n):
            raise ValueError(f"tile map of shape {tile_map.shape}, expected {(self.n, self.n)}")
        r1, c1 = min(row + self.n, self.shape[0]), min(col + self.n, self.shape[1])
        if r1 <= row or c1 <= col:
            return
        w = self.window[: r1 - row, : c1 - col]
        self.num[row:r1, col:c1] += w * tile_map[: r1 - row, : c1 - col].astype(np.float32)
        self.den[row:r1, col:c1] += w
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
