"""Map outputs: 8-bit PNGs and the pyramidal tiled TIFF heatmap of a slide (the colours and overlays
are ``histocam.core.visual``'s).

The TIFF holds the map as 8-bit grey (value = round(255·p)) in 256×256 tiles, one page per level,
each half the size of the one before until the level fits one tile (reduced pages are
``subfiletype`` 1): the layout OpenSlide and tiffslide read as a pyramid and QuPath opens. Every
page has its resolution (pixels per centimetre, from the slide's MPP times the map's downsample)
when the slide has an MPP, and a JSON description with the level-0 downsample of the page. Level k
is the 2×2 mean of level k − 1, made band by band into a temporary file: no level is ever whole in
memory. The pyramid writing itself is the data layer's (``histocam.data.pyramid``), shared with the
synthetic slides of ``histocam data synth-slide``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from histocam.core.visual import to_uint8
from histocam.data.pyramid import TIFF_TILE, level_shapes
from histocam.data.pyramid import write_pyramid as write_tiff_pyramid

__all__ = ["TIFF_TILE", "level_shapes", "save_png", "write_pyramid"]


def save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def write_pyramid(values: np.ndarray, path: Path, *, downsample: float, mpp: float | None,
                  scratch: Path, description: dict | None = None) -> Path:
    """Write ``values`` (H×W in [0, 1], e.g. a memmap; level-0 pixels per map pixel
    ``downsample``) as a tiled pyramidal TIFF of 8-bit grey round(255·p) (module docstring;
    ``histocam.data.pyramid`` writes it). ``scratch`` holds the temporary reduced levels."""
    return write_tiff_pyramid(values, path, downsample=downsample, mpp=mpp, scratch=scratch,
                              description=description, encode=to_uint8)
