"""Building blocks of the synthetic H&E renderer: noise fields, nuclei, Beer–Lambert rendering.

Tissue is described by two stain concentration fields, haematoxylin (nuclei, blue-purple) and eosin
(cytoplasm and stroma, pink), and rendered in optical-density space (Ruifrok & Johnston 2001):
OD = c_H·h + c_E·e + od_0, RGB = 255·exp(−OD), with per-image perturbation of the stain vectors and
concentrations, a ``stain_shift`` that moves the stain vectors towards a distant stain, blur and
sensor noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Stain OD colour vectors (unit norm): the H&E reference of Macenko et al. (ISBI 2009) as used by
# common stain-normalisation tools; pinker eosin than Ruifrok & Johnston's magenta one.
H_SOURCE = np.array([0.5626, 0.7201, 0.4062])
E_SOURCE = np.array([0.2159, 0.8012, 0.5581])
# The direction stain_shift moves towards (a bluer haematoxylin, a more orange eosin).
H_SHIFTED = np.array([0.80, 0.60, 0.12])
E_SHIFTED = np.array([0.02, 0.75, 0.62])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@functools.lru_cache(maxsize=64)
def _bspline_weights(size: int, cells: int) -> np.ndarray:
    """size × (cells + 3) cubic B-spline interpolation weights (rows sum to 1)."""
    x = (np.arange(size) + 0.5) * cells / size + 1.0
    d = np.abs(x[:, None] - np.arange(cells + 3)[None, :])
    w = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
    return w.astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a ``cells``² random grid, cubic B-spline upsampled to ``size``².

    Separable interpolation: two small matrix products.
    """
    w = _bspline_weights(size, int(cells))
    grid = rng.standard_normal((int(cells) + 3, int(cells) + 3)).astype(np.float32)
    out = w @ grid @ w.T
    return out / (np.abs(out).max() + 1e-8)


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def fibres(rng: np.random.Generator, size: int, period: float) -> np.ndarray:
    """Wavy collagen-like fibre texture in [0, 1]: two families of warped, broken sinusoids."""
    yy, xx = pixel_grid(size)
    out = np.zeros((size, size), np.float32)
    blend = 0.5 + 0.5 * smooth_noise(rng, size, 3)
    for weight in (blend, 1 - blend):
        theta = rng.uniform(0, np.pi)
        warp = smooth_noise(rng, size, 5) * rng.uniform(8, 18)
        p = period * rng.uniform(0.8, 1.25)
        phase = (xx * np.cos(theta) + yy * np.sin(theta) + warp) * (2 * np.pi / p)
        broken = np.clip(0.6 + smooth_noise(rng, size, 14), 0, 1)  # fibres fade in and out
        out += weight * broken * np.abs(np.sin(phase)) ** 4
    return out


@dataclass
class Nuclei:
    """A batch of elliptical nuclei to stamp onto the haematoxylin field (all arrays length N)."""

    y: np.ndarray
    x: np.ndarray
    ry: np.ndarray  # semi-axis along the orientation
    rx: np.ndarray
    angle: np.ndarray  # radians
    density: np.ndarray  # peak haematoxylin concentration
    rim: np.ndarray  # 0 = solid chromatin, 1 = vesicular (dark rim, pale centre)
    nucleolus: np.ndarray  # bool: a dark dot inside

    @staticmethod
    def concat(*groups: Nuclei) -> Nuclei:
        return Nuclei(*(np.concatenate([getattr(g, f) for g in groups]) for f in Nuclei.FIELDS))

    FIELDS = ("y", "x", "ry", "rx", "angle", "density", "rim", "nucleolus")


def make_nuclei(rng, y, x, ry, rx, angle, density, rim=0.0, nucleolus=False) -> Nuclei:
    n = len(y)
    full = lambda v, dt=np.float32: np.broadcast_to(np.asarray(v, dtype=dt), (n,)).copy()  # noqa: E731
    return Nuclei(full(y), full(x), full(ry), full(rx), full(angle), full(density), full(rim),
                  full(nucleolus, bool))


def stamp_nuclei(field: np.ndarray, nuclei: Nuclei, rng: np.random.Generator) -> np.ndarray:
    """Max-composite soft-edged, textured ellipses onto ``field`` (vectorised over nuclei).

    Nuclei are stamped in groups of similar size so that small lymphocytes do not pay for the patch
    size of large tumour nuclei. Returns a bool map of nucleus pixels.
    """
    covered = np.zeros(field.shape, bool)
    extent = np.maximum(nuclei.ry, nuclei.rx)
    bins = np.digitize(extent, [2.5, 3.5, 5.0, 7.0])
    for b in np.unique(bins):
        pick = np.flatnonzero(bins == b)
        group = Nuclei(*(getattr(nuclei, f)[pick] for f in Nuclei.FIELDS))
        covered |= _stamp_group(field, group, rng)
    return covered


def _stamp_group(field: np.ndarray, nuclei: Nuclei, rng: np.random.Generator) -> np.ndarray:
    h, w = field.shape
    r = int(np.ceil(max(nuclei.ry.max(), nuclei.rx.max()))) + 2
    k = 2 * r + 1
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    cy, cx = np.floor(nuclei.y).astype(np.int64), np.floor(nuclei.x).astype(np.int64)
    fy = (nuclei.y - cy)[:, None, None]
    fx = (nuclei.x - cx)[:, None, None]
    cos, sin = np.cos(nuclei.angle)[:, None, None], np.sin(nuclei.angle)[:, None, None]
    u = (dy - fy) * cos + (dx - fx) * sin
    v = -(dy - fy) * sin + (dx - fx) * cos
    q = np.sqrt((u / nuclei.ry[:, None, None]) ** 2 + (v / nuclei.rx[:, None, None]) ** 2)
    inside = np.clip((1.0 - q) * 3.0, 0.0, 1.0)  # soft edge about a third of the radius
    rim = nuclei.rim[:, None, None]
    profile = (1 - rim) + rim * (0.55 + 0.45 * np.clip(q, 0, 1) ** 2)  # vesicular: pale centre
    grain = 0.8 + 0.4 * rng.random((len(nuclei.y), k, k), dtype=np.float32)  # chromatin texture
    value = inside * profile * grain * nuclei.density[:, None, None]
    if nuclei.nucleolus.any():
        jitter = rng.uniform(-0.3, 0.3, (2, len(nuclei.y), 1, 1)).astype(np.float32)
        oy = jitter[0] * nuclei.ry[:, None, None]
        ox = jitter[1] * nuclei.rx[:, None, None]
        dot = np.clip(1.6 - np.hypot(u - oy, v - ox), 0, 1) * nuclei.nucleolus[:, None, None]
        value = np.maximum(value, dot * nuclei.density[:, None, None] * 1.9)
    stride = w + 2 * r
    base = (np.clip(cy, 0, h - 1) + r) * stride + np.clip(cx, 0, w - 1) + r
    flat = base[:, None, None] + (dy.astype(np.int64) * stride + dx.astype(np.int64))[None]
    padded = np.pad(field, r)
    np.maximum.at(padded.reshape(-1), flat.reshape(-1), value.reshape(-1).astype(field.dtype))
    field[:] = padded[r : r + h, r : r + w]
    covered = np.zeros((h + 2 * r) * stride, bool)
    covered[flat[inside > 0.5]] = True
    return covered.reshape(h + 2 * r, stride)[r : r + h, r : r + w]


def jittered_grid(rng, size: int, spacing: float, jitter: float = 0.45) -> tuple[np.ndarray, ...]:
    """Points on a jittered square grid covering the tile (for densely packed cells)."""
    n = int(np.ceil(size / spacing)) + 1
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float64) * spacing
    gy = gy + rng.uniform(-jitter, jitter, gy.shape) * spacing
    gx = gx + rng.uniform(-jitter, jitter, gx.shape) * spacing
    keep = (gy >= 0) & (gy < size) & (gx >= 0) & (gx < size)
    return gy[keep], gx[keep]


#: A fixed bank of standard-normal values; sensor noise is a random slice of it (deterministic
#: given the sample's generator, and cheaper than drawing fresh normals per pixel).
_NOISE_BANK = np.random.default_rng(20260101).standard_normal(1 << 21).astype(np.float32)


def sensor_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    start = int(rng.integers(0, _NOISE_BANK.size - n))
    return _NOISE_BANK[start : start + n]


@dataclass(frozen=True)
class StainStyle:
    """A domain's stain distribution: mean vectors, concentration gains, per-image variation."""

    h: np.ndarray
    e: np.ndarray
    gain_h: float = 1.0
    gain_e: float = 1.0
    background_od: float = 0.03


def render_rgb(
    conc_h: np.ndarray,
    conc_e: np.ndarray,
    style: StainStyle,
    rng: np.random.Generator,
    *,
    variation: float,
    shift: float,
    blur: float = 0.6,
    noise: float = 2.5,
) -> np.ndarray:
    """Concentration fields -> H×W×3 uint8 RGB by Beer–Lambert with per-image stain perturbation."""
    h_vec = style.h + shift * (H_SHIFTED - H_SOURCE)
    e_vec = style.e + shift * (E_SHIFTED - E_SOURCE)
    h_vec = unit(np.abs(unit(h_vec) + rng.normal(0, 0.04 * variation, 3)))
    e_vec = unit(np.abs(unit(e_vec) + rng.normal(0, 0.04 * variation, 3)))
    gain_h = style.gain_h * (1 + rng.uniform(-0.2, 0.2) * variation) * (1 + 0.15 * shift)
    gain_e = style.gain_e * (1 + rng.uniform(-0.2, 0.2) * variation) * (1 - 0.15 * min(shift, 3))
    ch = (conc_h * gain_h).astype(np.float32)
    ce = (conc_e * gain_e).astype(np.float32)
    if blur > 0:
        ch = ndimage.gaussian_filter(ch, blur, truncate=2.5)
        ce = ndimage.gaussian_filter(ce, blur, truncate=2.5)
    rgb = np.empty((*ch.shape, 3), np.float32)
    for c in range(3):
        od = ch * np.float32(-h_vec[c]) - ce * np.float32(e_vec[c]) - np.float32(style.background_od)
        rgb[..., c] = np.exp(od, out=od)
    rgb *= np.float32(255.0)
    rgb += sensor_noise(rng, rgb.size).reshape(rgb.shape) * np.float32(noise) + np.float32(0.5)
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
