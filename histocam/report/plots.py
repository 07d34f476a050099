"""Figures as embedded PNGs: matplotlib figures and image arrays -> ``data:image/png`` URIs."""

from __future__ import annotations

import base64
import io

import numpy as np

from histocam.predict.export import colormap_lut
from histocam.predict.export import to_uint8 as map_to_uint8

DPI = 80


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig) -> str:
    """The figure as a PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    # fixed margins: tight_layout's text measuring costs more than the rest of a small figure
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.17, top=0.87, wspace=0.25)
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(fig)
    return png_uri(buffer.getvalue())


def array_uri(rgb: np.ndarray, jpeg_quality: int | None = None) -> str:
    """An H×W×3 uint8 array as a PNG data URI, or JPEG with ``jpeg_quality`` (photographs: a
    third of the size, which keeps a report of many runs small)."""
    from PIL import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 image, got {rgb.shape} {rgb.dtype}")
    buffer = io.BytesIO()
    if jpeg_quality is None:
        Image.fromarray(rgb).save(buffer, format="PNG")
        return png_uri(buffer.getvalue())
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=jpeg_quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colorize(scores: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as jet colours (H×W×3 uint8), with the colour table of ``histocam
    predict``'s overlays."""
    return colormap_lut()[map_to_uint8(np.nan_to_num(scores))]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (H×W×3) or a float/bool mask (H×W) -> H×W×3 uint8."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)


def region_overlay(image: np.ndarray, scores: np.ndarray, tau: float) -> np.ndarray:
    """The image with pixels whose score is ≥ τ tinted red and the others darkened (uint8)."""
    rgb = to_uint8(image).astype(np.float64)
    on = scores >= tau
    out = rgb * 0.35
    out[on] = 0.5 * rgb[on] + 0.5 * np.array([255.0, 0.0, 0.0])
    return out.round().astype(np.uint8)


def downscale(rgb: np.ndarray, size: int) -> np.ndarray:
    """Largest side at most ``size`` pixels (area resampling), uint8 H×W×3."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= size:
        return rgb
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(shape, Image.Resampling.BOX))


def grid(rows: list[list[np.ndarray]], gap: int = 3) -> np.ndarray:
    """Panels (uint8 H×W×3, all the same size) tiled row by row on a white background."""
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one panel")
    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, n_cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            if panel.shape[:2] != (h, w):
                raise ValueError(f"panel {i},{j} is {panel.shape[:2]}, expected {(h, w)}")
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = panel
    return out
