"""How histocam draws maps and images: 8-bit values, the jet colour table, heatmap and region
overlays, mask outlines, panels and grids. Every picture (``histocam predict``'s overlays, the
report's galleries, the data contact sheets) uses these, so a map looks the same everywhere.
"""

from __future__ import annotations

import numpy as np

OVERLAY_ALPHA = 0.75


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] -> uint8 round(255·p) (clipped to [0, 1] first)."""
    return np.rint(np.clip(np.asarray(values, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (H×W×3) or a float/bool mask (H×W) -> H×W×3 uint8."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)


def colormap_lut(name: str = "jet") -> np.ndarray:
    """256×3 uint8 lookup table of a matplotlib colour map."""
    from matplotlib import colormaps

    return to_uint8(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3])


def colorize(scores: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as jet colours (H×W×3 uint8); NaN shows as 0."""
    return colormap_lut()[to_uint8(np.nan_to_num(scores))]


def overlay(rgb: np.ndarray, values: np.ndarray, alpha: float = OVERLAY_ALPHA,
            lut: np.ndarray | None = None) -> np.ndarray:
    """The heatmap of ``values`` (same H×W, in [0, 1]) blended on ``rgb`` (uint8) with an opacity
    that grows with the value, ``alpha`` · v: where the map says nothing (v ≈ 0) the image shows
    untouched, and a value's colour and opacity both say how high it is."""
    lut = colormap_lut() if lut is None else lut
    out = np.empty_like(rgb)
    for r in range(0, rgb.shape[0], 256):  # in bands: no float copy of the whole image
        v = to_uint8(values[r:r + 256])
        a = (alpha / 255.0) * v.astype(np.float32)[..., None]
        out[r:r + 256] = np.rint((1.0 - a) * rgb[r:r + 256].astype(np.float32)
                                 + a * lut[v].astype(np.float32))
    return out


def region_overlay(image: np.ndarray, scores: np.ndarray, tau: float) -> np.ndarray:
    """The image with pixels whose score is ≥ τ tinted red and the others darkened (uint8)."""
    rgb = image_to_uint8(image).astype(np.float64)
    on = scores >= tau
    out = rgb * 0.35
    out[on] = 0.5 * rgb[on] + 0.5 * np.array([255.0, 0.0, 0.0])
    return out.round().astype(np.uint8)


def outline(rgb: np.ndarray, mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Copy of ``rgb`` (uint8 H×W×3) with the boundary of ``mask`` (H×W bool) drawn: ``width``
    magenta pixels inside the region and one black pixel outside it, visible on tissue, on every
    colour of the jet maps and on a white page. A region that touches the image's edge is closed
    along it, so an all-foreground mask frames the image."""
    inside = np.asarray(mask, bool)
    eroded = inside
    for _ in range(width):
        padded = np.pad(eroded, 1, constant_values=False)
        eroded = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                  & padded[1:-1, :-2] & padded[1:-1, 2:])
    padded = np.pad(inside, 1, constant_values=False)
    grown = (padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1]
             | padded[1:-1, :-2] | padded[1:-1, 2:])
    out = rgb.copy()
    out[inside & ~eroded] = (255, 0, 255)
    out[grown & ~inside] = (0, 0, 0)
    return out


def downscale(rgb: np.ndarray, size: int) -> np.ndarray:
    """Largest side at most ``size`` pixels (area resampling), uint8 H×W×3."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= size:
        return rgb
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(shape, Image.Resampling.BOX))


def downscale_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask resized to ``shape`` (H, W) by nearest neighbour."""
    from PIL import Image

    image = Image.fromarray(np.asarray(mask, np.uint8) * 255)
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 127
