"""Figures as embedded images: matplotlib figures and image arrays -> ``data:`` URIs."""

from __future__ import annotations

import base64
import io

import numpy as np

DPI = 96
LEGEND = dict(fontsize=9, frameon=False)  # legends go beside or under their axes, never on a curve


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig) -> str:
    """The figure as a PNG data URI, cropped to what it draws (legends outside the axes
    included); the figure is closed."""
    buffer = io.BytesIO()
    fig.subplots_adjust(wspace=0.3)
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    pyplot().close(fig)
    return png_uri(buffer.getvalue())


def legend_below(ax, ncol: int = 3) -> None:
    """The axes' legend under it (outside the plot area, where it covers no curve)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, **LEGEND)


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


def colorbar_uri(width: int = 256, height: int = 14) -> str:
    """The jet colour table of the maps, 0 on the left and 1 on the right, as a PNG data URI."""
    from histocam.core.visual import colorize

    ramp = np.repeat(np.linspace(0.0, 1.0, width)[None], height, axis=0)
    return array_uri(colorize(ramp))
