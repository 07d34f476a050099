"""Map outputs: 8-bit PNGs and the pyramidal TIFF heatmaps of a slide (the colours and overlays are
``histocam.core.visual``'s).

The TIFF heatmaps are written by ``histocam.wsi.pyramid`` (tiled, one page per halving, resolution
and level-0 downsample on every page): grey round(255·p) (``write_heatmap``), or the colour map with
the value as alpha (``write_heatmap_rgba``: transparent where p = 0, e.g. off the tissue).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from histocam.core.visual import colormap_lut, to_uint8
from histocam.wsi.pyramid import write_pyramid


def save_png(array: np.ndarray, path: Path) -> Path:
    """``array`` as a PNG, written under a temporary name and renamed."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(array).save(tmp)
    tmp.replace(path)
    return path


def write_heatmap(values: np.ndarray, path: Path, *, downsample: float, mpp: float | None,
                  scratch: Path, description: dict | None = None) -> Path:
    """``values`` (H×W in [0, 1], e.g. a memmap; level-0 pixels per map pixel ``downsample``)
    as a tiled pyramidal TIFF of 8-bit grey round(255·p)."""
    return write_pyramid(values, path, downsample=downsample, mpp=mpp, scratch=scratch,
                         description=description, encode=to_uint8)


def write_heatmap_rgba(values: np.ndarray, path: Path, *, downsample: float, mpp: float | None,
                       scratch: Path, description: dict | None = None) -> Path:
    """``values`` as a tiled pyramidal RGBA TIFF: the colour map of each level's value, with the
    value as alpha (module docstring)."""
    lut = colormap_lut()

    def encode(band: np.ndarray) -> np.ndarray:
        v = to_uint8(band)
        return np.concatenate([lut[v], v[..., None]], axis=-1)

    return write_pyramid(values, path, downsample=downsample, mpp=mpp, scratch=scratch,
                         description=description, encode=encode)
