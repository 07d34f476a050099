"""Tissue detection on a slide thumbnail, whatever the stain (H&E, IHC DAB/haematoxylin, ...).

Light crossing stained tissue is absorbed; light crossing bare glass is not. So a pixel is tissue
when it is darker than the glass in some colour channel: its optical density above the glass,
OD = max over R, G, B of ln((G_c + 1) / (I_c + 1)) (Beer–Lambert, relative to the glass colour G
instead of pure white; 0 when the pixel is as bright as the glass), exceeds ``threshold``. Taking the
largest channel makes the test independent of the stain: eosin absorbs green, haematoxylin red and
green, DAB blue. A pale IHC slide, whose tissue barely changes the saturation, still has an OD well
above the glass noise (glass: about 0.01).

Steps (``detect_tissue``):

1. The glass colour G, per slide (``glass_colour``): the near-neutral, bright pixels (chroma
   max − min ≤ 20, mean ≥ 180, not saturated: max < 253) of the thumbnail; the mode of their
   brightness (1-level bins, smoothed over 5 levels); G = the per-channel median of those within 4
   levels of the mode. Saturated white is left out because scanners paint areas they did not scan
   white (a slide's glass itself is then the grey mode). When fewer than 1% of the pixels are such
   glass, the slide shows no glass and G = white (255, 255, 255).
2. OD above G, smoothed by a Gaussian of ``smooth_um`` (nuclei and the pale cytoplasm between them
   average into one tissue value), thresholded at ``threshold``.
3. A closing by a disk of ``close_um`` (joins loose fibres and cell clusters into one region), holes
   smaller than ``max_hole_um2`` filled (lumens, small tears), objects smaller than ``min_area_um2``
   removed (dust, debris) (``morphology.py``).

Sizes are in microns and converted with the thumbnail's µm per pixel. The defaults score a recall of
at least 95% and a precision of at least 90% against the known tissue of synthetic H&E and pale
IHC-like slides (tests/test_tissue.py) and against hand-checked references of the shared Aperio
slides (``benchmarks/quality/slide_tissue.py``; docs/results.md, "Slides").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from histocam.wsi.morphology import close, fill_holes, remove_small
from histocam.wsi.reader import SlideReader, thumbnail_downsample

WHITE = (255.0, 255.0, 255.0)
GLASS_MIN_FRACTION = 0.01
#: the command-line option of each setting
OPTION_NAMES = {"threshold": "--tissue-threshold", "smooth_um": "--tissue-smooth",
                "close_um": "--tissue-close", "max_hole_um2": "--tissue-max-hole",
                "min_area_um2": "--tissue-min-area"}


@dataclass(frozen=True)
class TissueOptions:
    """The detector's settings (module docstring); ``histocam predict --tissue-*``."""

    threshold: float = 0.03  # optical density above the glass
    smooth_um: float = 2.0  # Gaussian σ before the threshold
    close_um: float = 4.0  # closing radius
    max_hole_um2: float = 10_000.0  # holes below this area are tissue
    min_area_um2: float = 2_000.0  # objects below this area are not

    def check(self) -> TissueOptions:
        """These options, or a ValueError naming the first one out of range."""
        if not 0.0 < self.threshold < 5.0:
            raise ValueError(f"--tissue-threshold {self.threshold}: an optical density above the "
                             "glass, in (0, 5) (default 0.03)")
        for name, option in OPTION_NAMES.items():
            value = getattr(self, name)
            if name != "threshold" and not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{option} {value}: must be 0 or more")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TissueMask:
    """The tissue of a thumbnail: ``mask`` (bool, thumbnail pixels of ``mpp`` microns), the glass
    colour and where it came from, and the OD threshold used."""

    mask: np.ndarray
    glass: tuple[float, float, float]
    glass_source: str
    mpp: float
    threshold: float

    @property
    def area_um2(self) -> float:
        return float(self.mask.sum()) * self.mpp * self.mpp


def glass_colour(rgb: np.ndarray) -> tuple[tuple[float, float, float], str]:
    """(G, how it was found) of an H×W×3 uint8 thumbnail (module docstring, step 1)."""
    a = rgb.reshape(-1, 3).astype(np.int16)
    hi, lo = a.max(axis=1), a.min(axis=1)
    brightness = a.mean(axis=1)
    candidate = (hi < 253) & (hi - lo <= 20) & (brightness >= 180)
    if candidate.any():
        hist = np.bincount(np.rint(brightness[candidate]).astype(np.int64), minlength=256)
        mode = int(np.convolve(hist.astype(np.float64), np.ones(5) / 5, "same").argmax())
        glass = candidate & (np.abs(brightness - mode) <= 4)
        fraction = float(glass.mean())
        if fraction >= GLASS_MIN_FRACTION:
            colour = tuple(float(v) for v in np.median(a[glass], axis=0))
            return colour, f"median of the glass mode ({fraction:.0%} of the thumbnail)"
    return WHITE, "white: the thumbnail shows no glass"


def optical_density(rgb: np.ndarray, glass: tuple[float, float, float]) -> np.ndarray:
    """H×W float32 optical density above the glass, max over the channels, at least 0."""
    g = np.asarray(glass, np.float32) + 1.0
    od = np.log(g / (rgb.astype(np.float32) + 1.0)).max(axis=2)
    return np.maximum(od, 0.0, out=od)


def tissue_pixels(rgb: np.ndarray, glass: tuple[float, float, float], threshold: float
                  ) -> np.ndarray:
    """Per-pixel tissue test without smoothing or morphology (a level-0 patch's tissue fraction)."""
    return optical_density(rgb, glass) > threshold


def detect_tissue(rgb: np.ndarray, mpp: float, options: TissueOptions | None = None
                  ) -> TissueMask:
    """The tissue of a thumbnail of ``mpp`` microns per pixel (module docstring)."""
    options = options or TissueOptions()
    if not mpp > 0:
        raise ValueError(f"thumbnail microns per pixel must be positive, got {mpp}")
    glass, source = glass_colour(rgb)
    od = optical_density(rgb, glass)
    sigma = options.smooth_um / mpp
    if sigma > 0.1:
        od = ndimage.gaussian_filter(od, sigma)
    mask = od > options.threshold
    mask = close(mask, int(round(options.close_um / mpp)))
    mask = fill_holes(mask, options.max_hole_um2 / mpp ** 2)
    mask = remove_small(mask, options.min_area_um2 / mpp ** 2)
    return TissueMask(mask, glass, source, float(mpp), options.threshold)


def slide_tissue(reader: SlideReader, level0_mpp: float, options: TissueOptions | None = None,
                 downsample: int | None = None) -> tuple[np.ndarray, TissueMask, int]:
    """(thumbnail RGB, its tissue, its level-0 downsample) of a ``SlideReader``'s slide of level-0
    ``level0_mpp`` microns per pixel; the thumbnail's longer side is at most
    ``THUMBNAIL_MAX_SIDE`` unless ``downsample`` is given."""
    d = downsample or thumbnail_downsample(reader.dimensions)
    thumb = reader.thumbnail(d)
    return thumb, detect_tissue(thumb, level0_mpp * d, options), d
