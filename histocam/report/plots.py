"""Figures as embedded images: matplotlib figures and image arrays -> ``data:`` URIs."""

from __future__ import annotations

import base64
import io

import numpy as np

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
