"""A synthetic whole slide with a known tumour region (``histocam data synth-slide``).

The slide is lymph-node tissue from the synthetic-node renderer (``synth_node.render_node``) laid
out tile by tile at level 0 (level 0 is the scale of the synthetic-node training tiles, so a run
trained on synthetic-node predicts it at its own scale), on white glass:

- tissue: one smooth blob, r < R(θ) = R₀ (1 + Σₖ aₖ cos(kθ + φₖ)) around the slide's centre, with
  R₀ = 0.42 · the shorter side; outside it the pixels are glass (near white, slight noise);
- stain: ``he`` (the renderer's H&E) or ``ihc``: a pale immunohistochemistry-like slide
  (``ihc_stain``): the H&E's haematoxylin at 0.3 of its concentration as the counterstain, eosin
  dropped, DAB (brown) on the tumour, rendered relative to the glass colour (stained tissue is never
  brighter than the glass); such tissue barely changes the saturation, the case of a pale IHC slide;
- tumour: ``tumours`` smaller blobs of the same form inside the tissue (the designed region D).
  Each tile is rendered as normal tissue (label 0); where D covers it, tumour tiles (label 1) of
  the same tile are rendered with further seeds and their tumour pixels pasted into D until D is
  covered (at most ``MAX_TUMOUR_RENDERS``). The known tumour mask is exactly the set of pasted
  pixels that lie in tissue (a pixel of D that no render covered stays normal and is not tumour).

Everything is a function of the seed and the tile position. Outputs in ``out`` (``name`` = stem):

- ``STEM.tif``: the slide, a tiled pyramidal RGB TIFF (``pyramid.py``, lossless zlib) with its MPP
  as TIFF resolution, read by OpenSlide and tiffslide;
- ``STEM.geojson``: the tumour region as QuPath-importable polygons in level-0 pixel coordinates
  (``geojson.py``; classification ``Tumor``), the annotation ``histocam data patches`` reads;
- ``truth/STEM.mask.tif``: the level-0 tumour mask (0/255) as a pyramidal TIFF aligned with the
  slide; ``truth/STEM.mask.png``: the mask at ``mask_downsample`` (a pixel is tumour when at least
  half of its level-0 block is); ``truth/STEM.tissue.png``: the tissue at the same downsample;
- ``STEM.json``: size, MPP, seed, the blobs, the tumour and tissue areas, the files.

Memory: the level-0 RGB and the mask are ``numpy.memmap`` files under ``out/.STEM.work`` (removed at
the end); the GeoJSON tracing holds the level-0 mask (one byte a pixel) in memory.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from histocam.core.progress import track
from histocam.data.config import SyntheticConfig
from histocam.data.stain import HED_FROM_RGB, RGB_FROM_HED
from histocam.data.synth_node import render_node
from histocam.wsi.geojson import region_features, write_geojson
from histocam.wsi.pyramid import release, write_pyramid

MAX_TUMOUR_RENDERS = 24
GLASS = np.array([243, 242, 240], np.float32)
TUMOUR_NAME = "Tumor"
TUMOUR_COLOR = (200, 0, 0)
_HARMONICS = 4
STAINS = ("he", "ihc")
IHC_HAEMATOXYLIN = 0.3  # counterstain concentration relative to the H&E's haematoxylin
IHC_DAB = 0.22  # DAB concentration on tumour (brown), less where the nuclei are


@dataclass
class Blob:
    """r < R(θ) = radius · (1 + Σₖ amplitudes[k] cos((k+2)θ + phases[k])) around (cx, cy)."""

    cx: float
    cy: float
    radius: float
    amplitudes: list[float]
    phases: list[float]

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx, dy = x - self.cx, y - self.cy
        theta = np.arctan2(dy, dx)
        edge = np.full(theta.shape, 1.0)
        for k, (a, p) in enumerate(zip(self.amplitudes, self.phases)):
            edge += a * np.cos((k + 2) * theta + p)
        return dx * dx + dy * dy < (self.radius * edge) ** 2


def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, wobble: float) -> Blob:
    return Blob(float(cx), float(cy), float(radius),
                (rng.uniform(0, wobble, _HARMONICS) / np.arange(1, _HARMONICS + 1)).tolist(),
                rng.uniform(0, 2 * np.pi, _HARMONICS).tolist())


@dataclass
class SlideDesign:
    """The tissue blob and the tumour blobs of a synthetic slide of ``width``×``height``."""

    width: int
    height: int
    tissue: Blob
    tumours: list[Blob] = field(default_factory=list)


def design_slide(width: int, height: int, tumours: int, seed: int) -> SlideDesign:
    """The blobs (module docstring): tumour centres at most half the tissue radius from the
    centre, tumour radii 6–12% of the shorter side."""
    rng = np.random.default_rng([seed, 0x51DE])
    short = min(width, height)
    tissue = _blob(rng, width / 2, height / 2, 0.42 * short, 0.12)
    blobs = []
    for _ in range(tumours):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5) * tissue.radius
        blobs.append(_blob(rng, tissue.cx + dist * np.cos(angle), tissue.cy + dist * np.sin(angle),
                           rng.uniform(0.06, 0.12) * short, 0.25))
    return SlideDesign(width, height, tissue, blobs)


def ihc_stain(rgb: np.ndarray, tumour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An H&E render turned into a pale DAB/haematoxylin one (module docstring): stain
    concentrations by colour deconvolution (Ruifrok & Johnston 2001, ``histocam.data.stain``),
    haematoxylin × ``IHC_HAEMATOXYLIN``, DAB ``IHC_DAB`` · (1 − H) · U(0.7, 1.3) on tumour, then
    Beer–Lambert relative to the glass with sensor noise (σ 2 levels)."""
    od = -np.log((rgb.astype(np.float64) + 1.0) / 256.0)
    hed = od @ HED_FROM_RGB
    h = np.clip(hed[..., 0], 0.0, None)
    dab = np.where(tumour, IHC_DAB, 0.0) * (1.0 - np.clip(h, 0.0, 1.0)) * \
        rng.uniform(0.7, 1.3, tumour.shape)
    unit = RGB_FROM_HED / np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
    od = (IHC_HAEMATOXYLIN * h)[..., None] * unit[0] + dab[..., None] * unit[2]
    out = (GLASS + 1.0) * np.exp(-od) - 1.0 + rng.normal(0.0, 2.0, od.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_slide_tile(design: SlideDesign, x0: int, y0: int, tile: int, seed: int,
                      knobs: SyntheticConfig, stain: str = "he"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB uint8, tumour mask, tissue mask) of the tile×tile tile with top-left (x0, y0)."""
    yy, xx = np.mgrid[y0:y0 + tile, x0:x0 + tile].astype(np.float64) + 0.5
    tissue = design.tissue.contains(xx, yy)
    wanted = np.zeros(tissue.shape, bool)
    for blob in design.tumours:
        wanted |= blob.contains(xx, yy)
    wanted &= tissue
    rng = np.random.default_rng([seed, x0, y0, 0])
    image, _ = render_node(rng, 0, tile, knobs)
    tumour = np.zeros(tissue.shape, bool)
    k = 1
    while k <= MAX_TUMOUR_RENDERS and (wanted & ~tumour).any():
        t_image, t_mask = render_node(np.random.default_rng([seed, x0, y0, k]), 1, tile, knobs)
        take = t_mask & wanted & ~tumour
        image[take] = t_image[take]
        tumour |= take
        k += 1
    if stain == "ihc":
        image = ihc_stain(image, tumour, np.random.default_rng([seed, x0, y0, 0x1C]))
    if not tissue.all():
        noise = rng.normal(0.0, 2.0, (*tissue.shape, 1))
        glass = np.clip(np.rint(GLASS + noise), 0, 255).astype(np.uint8)
        image = np.where(tissue[..., None], image, glass)
    return image, tumour, tissue


@dataclass
class SynthSlide:
    slide: Path
    geojson: Path
    mask_tif: Path
    mask_png: Path
    tissue_png: Path
    summary: Path
    tumour_pixels: int
    tissue_pixels: int


def _block_fraction(mask: np.ndarray, d: int) -> np.ndarray:
    """Fraction of True pixels in each d×d block (edge blocks: of the pixels present)."""
    h, w = mask.shape
    out = np.empty((math.ceil(h / d), math.ceil(w / d)), np.float32)
    for r in range(0, out.shape[0], 256):
        block = np.asarray(mask[r * d:(r + 256) * d], np.float32)
        rows = math.ceil(block.shape[0] / d)
        padded = np.full((rows * d, out.shape[1] * d), np.nan, np.float32)
        padded[:block.shape[0], :w] = block
        out[r:r + rows] = np.nanmean(padded.reshape(rows, d, out.shape[1], d), axis=(1, 3))
    return out


def write_synth_slide(out: str | Path, *, width: int = 4096, height: int | None = None,
                      tile: int = 256, tumours: int = 3, seed: int = 0, mpp: float = 0.5,
                      mask_downsample: int = 16, name: str = "synthetic-slide",
                      knobs: SyntheticConfig | None = None, progress: bool = False,
                      stain: str = "he") -> SynthSlide:
    """Write a synthetic slide, its tumour annotation and its known mask (module docstring).
    ``tile``: the rendered tile size (the synthetic-node tile size of the runs to test);
    ``tumours`` = 0 gives a normal slide (empty annotation, empty mask)."""
    height = width if height is None else height
    if width < tile or height < tile:
        raise ValueError(f"slide size {width}×{height} is smaller than one tile ({tile})")
    if tile < 64:
        raise ValueError(f"--tile {tile}: the synthetic-node renderer needs at least 64 pixels")
    if tumours < 0:
        raise ValueError(f"--tumours {tumours}: must be 0 or more")
    if mpp <= 0:
        raise ValueError(f"--mpp {mpp}: must be positive")
    if mask_downsample < 1:
        raise ValueError(f"--mask-downsample {mask_downsample}: must be at least 1")
    if stain not in STAINS:
        raise ValueError(f"--stain {stain!r}: one of {', '.join(STAINS)}")
    knobs = (knobs or SyntheticConfig()).model_copy(update={"size": tile, "seed": seed})
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    work = out / f".{name}.work"
    work.mkdir(exist_ok=True)
    design = design_slide(width, height, tumours, seed)
    try:
        rgb = np.memmap(work / "rgb.u8", np.uint8, "w+", shape=(height, width, 3))
        mask = np.memmap(work / "mask.u8", np.uint8, "w+", shape=(height, width))
        tissue_pixels = 0
        starts = [(y, x) for y in range(0, height, tile) for x in range(0, width, tile)]
        if progress:
            starts = track(starts, f"{name}: tiles", unit="tiles")
        for y, x in starts:
            image, tumour, tissue = render_slide_tile(design, x, y, tile, seed, knobs, stain)
            h, w = min(tile, height - y), min(tile, width - x)
            rgb[y:y + h, x:x + w] = image[:h, :w]
            mask[y:y + h, x:x + w] = tumour[:h, :w] * np.uint8(255)
            tissue_pixels += int(tissue[:h, :w].sum())
            if x + tile >= width:
                release(rgb)
                release(mask)
        description = {"name": name, "generator": "histocam data synth-slide", "seed": seed,
                       "mpp": mpp, "stain": stain}
        slide = write_pyramid(rgb, out / f"{name}.tif", mpp=mpp, scratch=work,
                              description=description)
        del rgb
        mask_tif = write_pyramid(mask, out / "truth" / f"{name}.mask.tif", mpp=mpp, scratch=work,
                                 description={**description, "mask": "tumour 255, other 0"})
        truth = np.asarray(mask) > 0
        tumour_pixels = int(truth.sum())
        collection = region_features(truth, None, name=TUMOUR_NAME, color=TUMOUR_COLOR)
        geojson = write_geojson(collection, out / f"{name}.geojson")
        mask_png = out / "truth" / f"{name}.mask.png"
        Image.fromarray(((_block_fraction(truth, mask_downsample) >= 0.5) * 255).astype(np.uint8)
                        ).save(mask_png)
        del truth, mask
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tissue_png = out / "truth" / f"{name}.tissue.png"
    d = mask_downsample
    ty, tx = np.mgrid[0:math.ceil(height / d), 0:math.ceil(width / d)].astype(np.float64)
    Image.fromarray((design.tissue.contains((tx + 0.5) * d, (ty + 0.5) * d) * 255).astype(np.uint8)
                    ).save(tissue_png)
    summary = out / f"{name}.json"
    summary.write_text(json.dumps({
        "width": width, "height": height, "mpp": mpp, "tile": tile, "seed": seed, "stain": stain,
        "tumours": tumours, "tumour_pixels": tumour_pixels, "tissue_pixels": tissue_pixels,
        "tumour_fraction_of_tissue": tumour_pixels / tissue_pixels if tissue_pixels else 0.0,
        "polygons": len(collection["features"]), "mask_downsample": mask_downsample,
        "design": {"tissue": design.tissue.__dict__, "tumours": [b.__dict__ for b in design.tumours]},
        "files": {"slide": slide.name, "annotation": geojson.name,
                  "mask_level0": f"truth/{mask_tif.name}", "mask_png": f"truth/{mask_png.name}",
                  "tissue_png": f"truth/{tissue_png.name}"}}, indent=1))
    return SynthSlide(slide, geojson, mask_tif, mask_png, tissue_png, summary, tumour_pixels,
                      tissue_pixels)
