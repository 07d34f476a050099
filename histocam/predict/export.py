"""Map outputs: 8-bit PNGs, heatmap overlays, and the pyramidal tiled TIFF heatmap of a slide.

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

from histocam.data.pyramid import TIFF_TILE, level_shapes
from histocam.data.pyramid import write_pyramid as write_tiff_pyramid

__all__ = ["OVERLAY_ALPHA", "TIFF_TILE", "colormap_lut", "level_shapes", "overlay", "save_png",
           "to_uint8", "write_pyramid"]
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


def write_pyramid(values: np.ndarray, path: Path, *, downsample: float, mpp: float | None,
                  scratch: Path, description: dict | None = None) -> Path:
    """Write ``values`` (H×W in [0, 1], e.g. a memmap; level-0 pixels per map pixel
    ``downsample``) as a tiled pyramidal TIFF of 8-bit grey round(255·p) (module docstring;
    ``histocam.data.pyramid`` writes it). ``scratch`` holds the temporary reduced levels."""
    return write_tiff_pyramid(values, path, downsample=downsample, mpp=mpp, scratch=scratch,
                              description=description, encode=to_uint8)
