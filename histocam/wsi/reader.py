"""``SlideReader``: regions of a slide at any level or scale, and its thumbnail, through a backend.

Coordinates are level-0 pixels. A region reaching outside the slide reads as white there. A tile of
level-0 extent E (``read_tile``) is read from the finest level whose downsample does not exceed the
tile's own (E / output size), i.e. the nearest level that is not coarser than needed, and comes back
at that level's resolution; the one resize to the model's input size is the caller's. The thumbnail
is read strip by strip from the finest level not finer than needed, so a whole level is never in
memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from histocam.wsi.backends import SlideBackend, open_backend

THUMBNAIL_MAX_SIDE = 2048
STRIP_PIXELS = 1 << 22  # level pixels read at once while making the thumbnail
MPP_KEYS = ("openslide.mpp-x", "tiffslide.mpp-x")


class SlideReader:
    """A slide opened with OpenSlide or tiffslide (``backends.py``; ``backend``: auto, openslide,
    tiffslide)."""

    def __init__(self, path: str | Path, backend: str = "auto") -> None:
        self.path = Path(path)
        self.slide: SlideBackend = open_backend(self.path, backend)
        self.backend = self.slide.name
        self.dimensions = self.slide.dimensions  # (width, height)
        self.level_dimensions = self.slide.level_dimensions
        self.level_downsamples = self.slide.level_downsamples

    @property
    def mpp(self) -> float | None:
        """Level-0 microns per pixel (x) that the file records, or None."""
        for key in MPP_KEYS:
            value = self.slide.properties.get(key)
            try:
                mpp = float(value)
            except (TypeError, ValueError):
                continue
            if mpp > 0 and math.isfinite(mpp):
                return mpp
        return None

    def best_level(self, downsample: float) -> int:
        """The finest level whose downsample does not exceed ``downsample`` (level 0 at least)."""
        fits = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * (1 + 1e-6)]
        return max(fits, key=lambda i: self.level_downsamples[i]) if fits else 0

    def read(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """height×width×3 uint8 RGB at ``level``, top-left at level-0 (x, y); white outside."""
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(math.floor(x / ds)), int(math.floor(y / ds))
        out = np.full((height, width, 3), 255, np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, lw), min(ly + height, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        out[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = self.slide.region(
            int(round(x0 * ds)), int(round(y0 * ds)), level, x1 - x0, y1 - y0)
        return out

    def read_tile(self, x: int, y: int, extent: float, size: int) -> np.ndarray:
        """The level-0 square [x, x + extent)² for an output of size×size pixels: n×n RGB read
        from the nearest level not coarser than extent / size (n = ceil(extent / that level's
        downsample); n = size when extent = size at level 0)."""
        level = self.best_level(extent / size)
        n = max(1, int(math.ceil(extent / self.level_downsamples[level] - 1e-6)))
        return self.read(x, y, n, n, level)

    def thumbnail(self, downsample: int) -> np.ndarray:
        """ceil(H/d)×ceil(W/d)×3 RGB at level-0 downsample ``d`` (module docstring)."""
        width, height = self.dimensions
        tw, th = math.ceil(width / downsample), math.ceil(height / downsample)
        level = self.best_level(downsample)
        ds = self.level_downsamples[level]
        level_width = math.ceil(tw * downsample / ds)
        rows = max(1, int(STRIP_PIXELS // max(1, level_width * downsample / ds)))
        out = np.empty((th, tw, 3), np.uint8)
        for r in range(0, th, rows):
            k = min(rows, th - r)
            strip = self.read(0, r * downsample, level_width,
                              math.ceil(k * downsample / ds), level)
            out[r:r + k] = np.asarray(Image.fromarray(strip).resize((tw, k), Image.Resampling.BOX))
        return out

    def close(self) -> None:
        self.slide.close()


def thumbnail_downsample(dimensions: tuple[int, int]) -> int:
    """Level-0 pixels per thumbnail pixel: the smallest that keeps the thumbnail's longer side at
    most ``THUMBNAIL_MAX_SIDE``."""
    return max(1, math.ceil(max(dimensions) / THUMBNAIL_MAX_SIDE))
