"""The grid of tissue tiles of a slide, at the tile scale.

Scales: "read pixels" are pixels at the tile scale, ``scale`` level-0 pixels each (a run trained at
0.5 µm/px on a slide of 0.25 µm/px: scale 2). Tiles of ``tile`` read pixels start every
``tile − overlap`` read pixels from the slide's top-left corner (the last tile of a row or column
may overhang the slide). The stitched map has one pixel per ``map_downsample`` read pixels, i.e.
``map_downsample · scale`` level-0 pixels; tile, overlap and stride are whole map pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class TileGrid:
    """The tiles of a slide to infer (module docstring)."""

    tile: int  # read pixels
    overlap: int  # read pixels
    scale: float  # level-0 pixels per read pixel
    map_downsample: int  # read pixels per map pixel
    size: tuple[int, int]  # (width, height) in read pixels
    positions: np.ndarray  # K×2 (x, y) read pixels of the tissue tiles, row-major order
    tissue: np.ndarray  # K tissue fractions

    @property
    def map_shape(self) -> tuple[int, int]:
        return (math.ceil(self.size[1] / self.map_downsample),
                math.ceil(self.size[0] / self.map_downsample))

    @property
    def map_tile(self) -> int:
        return self.tile // self.map_downsample

    @property
    def map_level0(self) -> float:
        """Level-0 pixels per map pixel."""
        return self.map_downsample * self.scale

    @property
    def extent(self) -> float:
        """A tile's side in level-0 pixels."""
        return self.tile * self.scale

    def level0(self, index: int) -> tuple[int, int, int]:
        """(x, y, size) of tile ``index`` in level-0 pixels (rounded)."""
        x, y = self.positions[index]
        return (int(round(x * self.scale)), int(round(y * self.scale)),
                int(round(self.tile * self.scale)))


def axis_starts(length: int, tile: int, stride: int) -> np.ndarray:
    """Tile starts 0, stride, 2·stride, ... until a tile reaches ``length`` (the last may overhang)."""
    count = 1 if length <= tile else math.ceil((length - tile) / stride) + 1
    return np.arange(count, dtype=np.int64) * stride


def tile_grid(dimensions: tuple[int, int], tissue: np.ndarray, thumb_downsample: float, *,
              tile: int, overlap: int, scale: float = 1.0, map_downsample: int = 8,
              min_tissue: float = 0.0) -> TileGrid:
    """The tiles whose tissue fraction on the thumbnail mask (``thumb_downsample`` level-0 pixels
    per mask pixel) exceeds ``min_tissue`` (0: any tissue). Tile and overlap must be multiples of
    ``map_downsample``, and the overlap at most half a tile."""
    if tile % map_downsample or overlap % map_downsample:
        raise ValueError(f"tile size {tile} and overlap {overlap} must be multiples of the map "
                         f"downsample {map_downsample}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap {overlap} must be between 0 and half the tile size {tile}")
    width, height = (math.ceil(d / scale - 1e-9) for d in dimensions)
    xs = axis_starts(width, tile, tile - overlap)
    ys = axis_starts(height, tile, tile - overlap)
    integral = np.pad(tissue.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    th, tw = tissue.shape

    def span(start: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.clip(np.floor(start * scale / thumb_downsample).astype(np.int64), 0, limit)
        b = np.clip(np.ceil((start + tile) * scale / thumb_downsample).astype(np.int64), 0, limit)
        return a, np.maximum(b, np.minimum(a + 1, limit))

    xa, xb = span(xs, tw)
    ya, yb = span(ys, th)
    total = (integral[np.ix_(yb, xb)] - integral[np.ix_(ya, xb)] - integral[np.ix_(yb, xa)]
             + integral[np.ix_(ya, xa)])
    area = np.outer(yb - ya, xb - xa)
    fraction = np.where(area > 0, total / np.maximum(area, 1), 0.0)
    rows, cols = np.nonzero(fraction > min_tissue)  # row-major order
    positions = np.stack([xs[cols], ys[rows]], axis=1).astype(np.int64).reshape(-1, 2)
    return TileGrid(tile, overlap, scale, map_downsample, (width, height), positions,
                    fraction[rows, cols].astype(np.float64))
