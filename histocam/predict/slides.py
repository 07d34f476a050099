"""Whole-slide reading: OpenSlide or tiffslide, a thumbnail, the tissue tile grid, tile datasets.

``SlideReader`` opens a slide with OpenSlide (the ``openslide-bin`` wheel ships the library, no
system package) or, when OpenSlide is not installed or cannot open the file, with tiffslide (pure
Python); ``backend`` forces one. Regions outside the slide read as white, and OpenSlide's
transparent pixels are composited on white, so both backends give the same RGB pixels.

Scales: "read pixels" are pixels at the tile scale, ``scale`` level-0 pixels each (1: level 0;
``--mpp M`` on a slide of level-0 MPP m gives scale = M/m). A tile of T read pixels is read from the
finest level whose downsample does not exceed ``scale`` and resized to T×T. The stitched map has
one pixel per ``map_downsample`` read pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from histocam.data.errors import DataError
from histocam.data.transforms import resize_image
from histocam.predict.tissue import tissue_mask

BACKENDS = ("auto", "openslide", "tiffslide")
THUMBNAIL_MAX_SIDE = 2048
STRIP_PIXELS = 1 << 22  # level pixels read at once while making the thumbnail


def _open(path: Path, backend: str):
    errors = []
    names = ("openslide", "tiffslide") if backend == "auto" else (backend,)
    for name in names:
        try:
            if name == "openslide":
                import openslide

                return openslide.OpenSlide(str(path)), "openslide"
            import tiffslide

            return tiffslide.TiffSlide(str(path)), "tiffslide"
        except ImportError:
            errors.append(f"{name} is not installed (pip install 'histocam[wsi]')")
        except Exception as exc:  # each library has its own error types
            errors.append(f"{name}: {' '.join(str(exc).split()) or type(exc).__name__}")
    raise DataError(path, "cannot open the slide (" + "; ".join(errors) + ")")


class SlideReader:
    """A slide opened with OpenSlide or tiffslide (module docstring)."""

    def __init__(self, path: str | Path, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"slide backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "file not found")
        self.slide, self.backend = _open(self.path, backend)
        self.dimensions = tuple(int(v) for v in self.slide.dimensions)  # (width, height)
        self.level_dimensions = [tuple(int(v) for v in d) for d in self.slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self.slide.level_downsamples]

    @property
    def mpp(self) -> float | None:
        """Level-0 microns per pixel (x), or None when the file does not say."""
        props = self.slide.properties
        for key in (f"{self.backend}.mpp-x", "openslide.mpp-x", "tiffslide.mpp-x"):
            value = props.get(key)
            if value not in (None, ""):
                try:
                    mpp = float(value)
                except ValueError:
                    continue
                if mpp > 0:
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
        region = self.slide.read_region((int(round(x0 * ds)), int(round(y0 * ds))), level,
                                        (x1 - x0, y1 - y0))
        a = np.asarray(region)
        if a.shape[2] == 4 and bool((a[..., 3] < 255).any()):  # OpenSlide's transparent pixels:
            alpha = a[..., 3:4].astype(np.uint32)  # composite on white (not premultiplied)
            a = ((a[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        out[y0 - ly:y1 - ly, x0 - lx:x1 - lx] = a[..., :3]
        return out

    def read_scaled(self, x: int, y: int, size: int, scale: float) -> np.ndarray:
        """size×size RGB covering level-0 [x, x + size·scale) × [y, y + size·scale)."""
        if scale == 1.0:
            return self.read(x, y, size, size, 0)
        level = self.best_level(scale)
        n = max(1, int(math.ceil(size * scale / self.level_downsamples[level])))
        region = self.read(x, y, n, n, level)
        if n == size:
            return region
        return np.asarray(Image.fromarray(region).resize((size, size), Image.Resampling.BILINEAR))

    def thumbnail(self, downsample: int) -> np.ndarray:
        """ceil(H/d)×ceil(W/d)×3 RGB at level-0 downsample ``d``, read strip by strip from the
        finest level not finer than needed (the whole level is never in memory)."""
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


@dataclass
class TileGrid:
    """The tiles of a slide to infer (module docstring for the scales)."""

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

    def level0(self, index: int) -> tuple[int, int, int]:
        """(x, y, size) of tile ``index`` in level-0 pixels."""
        x, y = self.positions[index]
        return (int(round(x * self.scale)), int(round(y * self.scale)),
                int(round(self.tile * self.scale)))


def axis_starts(length: int, tile: int, stride: int) -> np.ndarray:
    """Tile starts 0, stride, 2·stride, ... until a tile reaches ``length`` (the last may overhang)."""
    count = 1 if length <= tile else math.ceil((length - tile) / stride) + 1
    return np.arange(count, dtype=np.int64) * stride


def tile_grid(dimensions: tuple[int, int], tissue: np.ndarray, thumb_downsample: int, *,
              tile: int, overlap: int, scale: float = 1.0, map_downsample: int = 8,
              min_tissue: float = 0.0) -> TileGrid:
    """The tiles (tile − overlap apart) whose tissue fraction on the thumbnail mask exceeds
    ``min_tissue`` (0: any tissue). Tile, overlap and stride must be multiples of
    ``map_downsample`` so that tiles fall on whole map pixels."""
    if tile % map_downsample or overlap % map_downsample:
        raise ValueError(f"tile size {tile} and overlap {overlap} must be multiples of the map "
                         f"downsample {map_downsample}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap {overlap} must be between 0 and half the tile size {tile}")
    width, height = (math.ceil(d / scale) for d in dimensions)
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
    positions, fractions = [], []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            total = integral[yb[j], xb[i]] - integral[ya[j], xb[i]] - integral[yb[j], xa[i]] + \
                integral[ya[j], xa[i]]
            area = (yb[j] - ya[j]) * (xb[i] - xa[i])
            fraction = float(total) / area if area else 0.0
            if fraction > min_tissue:
                positions.append((x, y))
                fractions.append(fraction)
    return TileGrid(tile, overlap, scale, map_downsample, (width, height),
                    np.array(positions, np.int64).reshape(-1, 2), np.array(fractions))


def thumbnail_downsample(dimensions: tuple[int, int], tile_level0: float) -> int:
    """Level-0 pixels per thumbnail pixel: about 8 thumbnail pixels per tile side, and a thumbnail
    no longer than ``THUMBNAIL_MAX_SIDE``."""
    return max(1, int(tile_level0 // 8), math.ceil(max(dimensions) / THUMBNAIL_MAX_SIDE))


def detect_tissue(reader: SlideReader, tile_level0: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(thumbnail RGB, its tissue mask, its level-0 downsample). Objects smaller than a quarter
    tile are removed and holes smaller than a tile filled."""
    t = thumbnail_downsample(reader.dimensions, tile_level0)
    thumb = reader.thumbnail(t)
    tile_px = (tile_level0 / t) ** 2
    return thumb, tissue_mask(thumb, int(tile_px / 4), int(tile_px)), t


class TileDataset(torch.utils.data.Dataset):
    """Tiles of ``grid`` (by index) as (index, 3×E×E float RGB in [0, 1]); each DataLoader worker
    opens the slide itself."""

    def __init__(self, path: Path, backend: str, grid: TileGrid, indices: np.ndarray,
                 eval_size: int) -> None:
        self.path, self.backend, self.grid = Path(path), backend, grid
        self.indices = np.asarray(indices, np.int64)
        self.eval_size = eval_size
        self._reader: SlideReader | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        if self._reader is None:
            self._reader = SlideReader(self.path, self.backend)
        index = int(self.indices[i])
        x, y, _ = self.grid.level0(index)
        rgb = self._reader.read_scaled(x, y, self.grid.tile, self.grid.scale)
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(255.0)
        return index, resize_image(image, self.eval_size)
