"""The key of a slide overlay, drawn under the picture: a colour bar and a scale bar.

The colour bar shows the colour map over the displayed range with three ticks and a title that says
what the values are and how they were scaled (``fixed``: probabilities 0–1 as they are; ``pNN``:
0 to the NN-th percentile of the values on tissue, so a slide of low values still shows its
contrast). The scale bar is the longest of 1, 2 or 5 × 10ᵏ µm that fits in a fifth of the width.
Text is in DejaVu Sans, the font matplotlib ships.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from histocam.core.visual import colormap_lut


def legend_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib: it has µ, τ and ×) at ``size`` pixels."""
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def nice_length(max_um: float) -> float:
    """The largest 1, 2 or 5 × 10ᵏ microns not above ``max_um``."""
    k = math.floor(math.log10(max_um))
    return max(m * 10.0 ** k for m in (1, 2, 5) if m * 10.0 ** k <= max_um)


def length_label(um: float) -> str:
    return f"{um / 1000:g} mm" if um >= 1000 else f"{um:g} µm"


def add_legend(picture: np.ndarray, *, title: str, value_range: tuple[float, float],
               um_per_px: float | None) -> np.ndarray:
    """``picture`` (H×W×3 uint8) with a white strip below it holding the colour bar over
    ``value_range`` with ``title``, and a scale bar when ``um_per_px`` is known."""
    h, w = picture.shape[:2]
    font_size = max(11, min(32, round(max(w, h) / 60)))
    font = legend_font(font_size)
    pad = font_size
    bar_h = font_size
    strip = 3 * font_size + 3 * pad
    canvas = Image.new("RGB", (w, h + strip), "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = h + pad
    draw.text((pad, top), title, fill="black", font=font)
    bar_w = max(64, int(0.4 * w))
    bar_y = top + font_size + pad // 2
    lut = colormap_lut()
    ramp = lut[np.linspace(0, 255, bar_w).round().astype(int)][None].repeat(bar_h, axis=0)
    canvas.paste(Image.fromarray(np.ascontiguousarray(ramp)), (pad, bar_y))
    draw.rectangle([pad, bar_y, pad + bar_w - 1, bar_y + bar_h - 1], outline="black")
    lo, hi = value_range
    for f in (0.0, 0.5, 1.0):
        x = pad + round(f * (bar_w - 1))
        draw.line([x, bar_y + bar_h, x, bar_y + bar_h + pad // 3], fill="black")
        text = f"{lo + f * (hi - lo):.2g}"
        width = draw.textlength(text, font=font)
        draw.text((x - width * f, bar_y + bar_h + pad // 3), text, fill="black", font=font)
    if um_per_px is not None and um_per_px > 0:
        length = nice_length(0.2 * w * um_per_px)
        px = round(length / um_per_px)
        x1 = w - pad
        y = bar_y + bar_h // 2
        draw.rectangle([x1 - px, y - 2, x1, y + 2], fill="black")
        label = length_label(length)
        draw.text((x1 - px / 2 - draw.textlength(label, font=font) / 2, y + pad // 2), label,
                  fill="black", font=font)
    return np.asarray(canvas)
