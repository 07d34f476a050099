"""Map outputs: 8-bit PNGs, heatmap overlays, and the pyramidal tiled TIFF heatmap of a slide.

The TIFF holds the map as 8-bit grey (value = round(255·p)) in 256×256 tiles, one page per level,
each half the size of the one before until the level fits one tile (reduced pages are
``subfiletype`` 1): the layout OpenSlide and tiffslide read as a pyramid and QuPath opens. Every
page has its resolution (pixels per centimetre, from the slide's MPP times the map's downsample)
when the slide has an MPP, and a JSON description with the level-0 downsample of the page. Level k
is the 2×2 mean of level k − 1, made band by band into a temporary file: no level is ever whole in
memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from histocam.predict.stitch import release

TIFF_TILE = 256
OVERLAY_ALPHA = 0.5


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] -> uint8 round(255·p)."""
    return np.rint(np.clip(np.asarray(values, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def colormap_lut(name: str = "jet") -> np.ndarray:
    """256×3 uint8 lookup table of a matplotlib colour map."""
    from matplotlib import colormaps

    return to_uint8(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3])


def overlay(rgb: np.ndarray, values: np.ndarray, alpha: float = OVERLAY_ALPHA,
            lut: np.ndarray | None = None) -> np.ndarray:
    """The heatmap of ``values`` (same H×W, in [0, 1]) blended on ``rgb``."""
    lut = colormap_lut() if lut is None else lut
    out = np.empty_like(rgb)
    for r in range(0, rgb.shape[0], 256):  # in bands: no float copy of the whole image
        heat = lut[to_uint8(values[r:r + 256])].astype(np.float32)
        out[r:r + 256] = np.rint((1.0 - alpha) * rgb[r:r + 256].astype(np.float32) + alpha * heat)
    return out


def save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def _halve(src: np.ndarray, dst: np.ndarray, band: int = 1024) -> None:
    """dst = 2×2 mean of src (odd edges: the mean of the pixels present), band by band."""
    h, w = src.shape
    for r in range(0, dst.shape[0], band):
        block = np.asarray(src[2 * r: 2 * (r + band)], np.float32)
        if block.shape[0] % 2:
            block = np.concatenate([block, block[-1:]], axis=0)
        if w % 2:
            block = np.concatenate([block, block[:, -1:]], axis=1)
        dst[r:r + band] = block.reshape(block.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
        release(src)
        release(dst)


def _tiles(level: np.ndarray) -> Iterator[np.ndarray]:
    """The level's 256×256 uint8 tiles in row-major order (edge tiles zero-padded)."""
    h, w = level.shape
    for r in range(0, h, TIFF_TILE):
        band = to_uint8(level[r:r + TIFF_TILE])
        release(level)
        for c in range(0, w, TIFF_TILE):
            tile = np.zeros((TIFF_TILE, TIFF_TILE), np.uint8)
            part = band[:, c:c + TIFF_TILE]
            tile[:part.shape[0], :part.shape[1]] = part
            yield tile


def level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Level 0 and every halving (ceil) until a level fits one tile."""
    shapes = [tuple(int(v) for v in shape)]
    while max(shapes[-1]) > TIFF_TILE:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def write_pyramid(values: np.ndarray, path: Path, *, downsample: float, mpp: float | None,
                  scratch: Path, description: dict | None = None) -> Path:
    """Write ``values`` (H×W in [0, 1], e.g. a memmap; level-0 pixels per map pixel
    ``downsample``) as a tiled pyramidal TIFF (module docstring). ``scratch`` holds the
    temporary reduced levels."""
    import tifffile

    scratch.mkdir(parents=True, exist_ok=True)
    shapes = level_shapes(values.shape)
    tmp = path.with_name(f".{path.name}.tmp")
    level = values
    made = []
    try:
        with tifffile.TiffWriter(tmp, bigtiff=values.size > 2**31) as tw:
            for k, shape in enumerate(shapes):
                if k:
                    reduced = np.memmap(scratch / f"level-{k}.f32", np.float32, "w+", shape=shape)
                    made.append(scratch / f"level-{k}.f32")
                    _halve(level, reduced)
                    level = reduced
                page_ds = downsample * 2 ** k
                extra = {}
                if mpp is not None:
                    per_cm = 1e4 / (mpp * page_ds)
                    extra = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
                tw.write(_tiles(level), shape=shape, dtype=np.uint8, tile=(TIFF_TILE, TIFF_TILE),
                         photometric="minisblack", compression="zlib", subfiletype=1 if k else 0,
                         description=json.dumps({**(description or {}), "level": k,
                                                 "level0_downsample": page_ds}),
                         metadata=None, **extra)
        tmp.replace(path)
    finally:
        for f in made:
            f.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path
