"""Tiled pyramidal TIFF writing in bounded memory: slides (RGB), maps and masks (grey or RGBA).

Each level is one page of 256×256 tiles, half the size (ceil) of the one before, until a level fits
one tile; reduced pages are ``subfiletype`` 1: the layout OpenSlide and tiffslide read as a pyramid
(OpenSlide's "generic tiled TIFF") and QuPath opens. Every page has its resolution (pixels per
centimetre, from the level-0 MPP times the page's downsample) when an MPP is given, and a JSON
description with the page's level-0 downsample. Level k is the 2×2 mean of level k − 1 (at odd
edges the mean of the pixels present), made band by band into a temporary float32 file: no level is
ever whole in memory, and the level-0 array may itself be a ``numpy.memmap``.

``encode`` turns a band of a level (the level-0 array's own dtype at level 0, float32 means above)
into the uint8 pixels stored: grey, RGB, or RGBA with unassociated alpha (a colour-mapped heatmap
whose transparency is its value), whatever the level-0 array's channels.
"""

from __future__ import annotations

import json
import math
import mmap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

TIFF_TILE = 256


def release(array: np.ndarray) -> None:
    """Write a memmap's dirty pages to its file and drop them from this process's memory (they
    are read back on the next access), so that resident memory does not grow with the file."""
    if isinstance(array, np.memmap) and array._mmap is not None:
        array.flush()
        if hasattr(mmap, "MADV_DONTNEED"):
            array._mmap.madvise(mmap.MADV_DONTNEED)


def round_uint8(values: np.ndarray) -> np.ndarray:
    """Pixel values in [0, 255] (uint8, or float means of uint8 pixels) -> uint8, rounded."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    return np.rint(np.clip(values.astype(np.float32), 0.0, 255.0)).astype(np.uint8)


def level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(rows, cols) of level 0 and of every halving (ceil) until a level fits one tile."""
    shapes = [tuple(int(v) for v in shape)]
    while max(shapes[-1]) > TIFF_TILE:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def halve(src: np.ndarray, dst: np.ndarray, band: int = 1024) -> None:
    """dst = 2×2 mean of src (H×W or H×W×C; odd edges: the mean of the pixels present), band by
    band."""
    w = src.shape[1]
    for r in range(0, dst.shape[0], band):
        block = np.asarray(src[2 * r: 2 * (r + band)], np.float32)
        if block.shape[0] % 2:
            block = np.concatenate([block, block[-1:]], axis=0)
        if w % 2:
            block = np.concatenate([block, block[:, -1:]], axis=1)
        dst[r:r + band] = block.reshape(block.shape[0] // 2, 2, block.shape[1] // 2, 2,
                                        *block.shape[2:]).mean(axis=(1, 3))
        release(src)
        release(dst)


def level_tiles(level: np.ndarray, encode: Callable[[np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
    """The level's 256×256 uint8 tiles in row-major order (edge tiles zero-padded)."""
    w = level.shape[1]
    for r in range(0, level.shape[0], TIFF_TILE):
        band = encode(level[r:r + TIFF_TILE])
        release(level)
        for c in range(0, w, TIFF_TILE):
            tile = np.zeros((TIFF_TILE, TIFF_TILE, *band.shape[2:]), np.uint8)
            part = band[:, c:c + TIFF_TILE]
            tile[:part.shape[0], :part.shape[1]] = part
            yield tile


def write_pyramid(level0: np.ndarray, path: Path, *, downsample: float = 1.0,
                  mpp: float | None, scratch: Path, description: dict | None = None,
                  encode: Callable[[np.ndarray], np.ndarray] = round_uint8,
                  compression: str = "zlib") -> Path:
    """Write ``level0`` (H×W grey or H×W×3 RGB; level-0 slide pixels per pixel ``downsample``) as a
    tiled pyramidal TIFF (module docstring). ``scratch`` holds the temporary reduced levels; the
    file appears under its name only when complete."""
    import tifffile

    if level0.ndim not in (2, 3) or (level0.ndim == 3 and level0.shape[2] != 3):
        raise ValueError(f"a pyramid level must be H×W or H×W×3, got shape {level0.shape}")
    scratch.mkdir(parents=True, exist_ok=True)
    channels = level0.shape[2:]
    stored = encode(np.zeros((1, 1, *channels), level0.dtype)).shape[2:]  # grey, RGB or RGBA
    photometric = {(): "minisblack", (3,): "rgb", (4,): "rgb"}[tuple(stored)]
    extrasamples = {"extrasamples": ("unassalpha",)} if stored == (4,) else {}
    shapes = level_shapes(level0.shape[:2])
    tmp = path.with_name(f".{path.name}.tmp")
    level = level0
    made = []
    try:
        with tifffile.TiffWriter(tmp, bigtiff=level0.size > 2**31) as tw:
            for k, shape in enumerate(shapes):
                if k:
                    name = scratch / f"{path.name}.level-{k}.f32"
                    reduced = np.memmap(name, np.float32, "w+", shape=(*shape, *channels))
                    made.append(name)
                    halve(level, reduced)
                    level = reduced
                page_ds = downsample * 2 ** k
                extra = {}
                if mpp is not None:
                    per_cm = 1e4 / (mpp * page_ds)
                    extra = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
                tw.write(level_tiles(level, encode), shape=(*shape, *stored), dtype=np.uint8,
                         tile=(TIFF_TILE, TIFF_TILE), photometric=photometric,
                         compression=compression, subfiletype=1 if k else 0, **extrasamples,
                         description=json.dumps({**(description or {}), "level": k,
                                                 "level0_downsample": page_ds}),
                         metadata=None, **extra)
        tmp.replace(path)
    finally:
        for f in made:
            f.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path
