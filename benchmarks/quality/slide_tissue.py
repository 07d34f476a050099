"""Tissue detection on real slides against hand-checked reference masks.

For each shared Aperio slide (``../shared/data/slides``) a reference tissue mask is built at level 0
by a method other than the detector's, with settings chosen per slide while looking at the result:

- the glass colours are measured in boxes picked by eye as bare glass (``GLASS_BOXES``: CMU-1's
  corners; TCGA-CR-7395's white area the scanner did not scan and its grey glass);
- a pixel is tissue when its RGB distance to the nearest glass colour exceeds ``DELTA`` grey levels
  (the detector uses the largest per-channel optical density above one estimated glass colour,
  smoothed, on a thumbnail);
- then, at level 0: an opening by a disk of 1 pixel (JPEG speckle), a closing by a disk of 3 µm,
  holes below 750 µm² filled, objects below 200 µm² removed.

The references were checked by eye: ``--figures DIR`` writes each slide with the non-tissue of the
reference tinted blue and its contour drawn (``REF-*.png``, whole slide and 1:1 crops), and the same
for the detector (``DET-*.png``); loose stroma and fibre ends count as tissue, the scanner's white
padding, its grey tiles of glass, dust and smudges on the glass do not. The detector runs as
``histocam predict`` runs it (``histocam.wsi.tissue.slide_tissue``: a thumbnail whose longer side is
at most 2048 pixels, default options); recall and precision are counted on the thumbnail's pixels,
the reference downsampled to it (a thumbnail pixel is tissue when at least half of its level-0 block
is). TCGA-CR-7395 records no microns per pixel: 1.0 µm/px is assumed (lymphocytes of about 7 µm
measure about 7 pixels); CMU-1-Small-Region records 0.499.

The synthetic H&E and pale IHC slides of the tests (``histocam data synth-slide --stain``) are
scored too, against their known tissue.

  python benchmarks/quality/slide_tissue.py [--slides ../shared/data/slides] [--figures DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides"
# per slide: boxes of bare glass (x0, y0, x1, y1 level-0), the level-0 MPP to assume when the
# file records none, and the RGB distance above which a pixel is tissue
GLASS_BOXES = {
    "CMU-1-Small-Region.svs": [(0, 0, 300, 300), (1900, 1400, 2200, 1700)],
    "TCGA-CR-7395-01A-01-TS1.svs": [(0, 0, 200, 200), (4243, 3367, 4443, 3567)],
}
ASSUMED_MPP = {"TCGA-CR-7395-01A-01-TS1.svs": 1.0}
DELTA = 18.0


def reference_mask(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]],
                   mpp: float) -> np.ndarray:
    """The level-0 reference tissue (module docstring)."""
    from histocam.wsi.morphology import close, disk, fill_holes, remove_small

    rgb = rgb.astype(np.float32)
    glasses = [np.median(rgb[y0:y1, x0:x1].reshape(-1, 3), axis=0) for x0, y0, x1, y1 in boxes]
    distance = np.min([np.linalg.norm(rgb - g, axis=2) for g in glasses], axis=0)
    mask = ndimage.binary_opening(distance > DELTA, disk(1))
    mask = close(mask, max(1, round(3.0 / mpp)))
    mask = fill_holes(mask, 750.0 / mpp ** 2)
    return remove_small(mask, 200.0 / mpp ** 2)


def block_majority(mask: np.ndarray, d: int, shape: tuple[int, int]) -> np.ndarray:
    """A pixel of the d-downsampled grid is True when at least half of its block is."""
    padded = np.zeros((shape[0] * d, shape[1] * d), np.float32)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    count = np.zeros(shape, np.float32)
    count[:] = padded.reshape(shape[0], d, shape[1], d).sum(axis=(1, 3))
    h, w = mask.shape
    present = np.minimum(d, h - np.arange(shape[0]) * d)[:, None] * \
        np.minimum(d, w - np.arange(shape[1]) * d)[None, :]
    return count >= 0.5 * present


def tinted(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` with the non-tissue tinted blue and the tissue's contour black."""
    out = rgb.astype(np.float32)
    out[~mask] = 0.45 * out[~mask] + 0.55 * np.array([0.0, 160.0, 255.0])
    out[mask & ~ndimage.binary_erosion(mask)] = 0
    return out.astype(np.uint8)


def score(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hit = float((found & truth).sum())
    return hit / max(truth.sum(), 1), hit / max(found.sum(), 1)


def real_slide(path: Path, figures: Path | None) -> tuple[float, float, str]:
    from histocam.wsi.reader import SlideReader
    from histocam.wsi.tissue import slide_tissue

    reader = SlideReader(path)
    mpp = reader.mpp or ASSUMED_MPP[path.name]
    width, height = reader.dimensions
    rgb = reader.read(0, 0, width, height)
    truth0 = reference_mask(rgb, GLASS_BOXES[path.name], mpp)
    thumb, tissue, d = slide_tissue(reader, mpp)
    truth = block_majority(truth0, d, tissue.mask.shape)
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tinted(thumb, truth)).save(figures / f"REF-{path.stem}.png")
        Image.fromarray(tinted(thumb, tissue.mask)).save(figures / f"DET-{path.stem}.png")
        cy, cx = height // 2, width // 2
        crop = (slice(max(0, cy - 500), cy + 500), slice(max(0, cx - 500), cx + 500))
        Image.fromarray(tinted(rgb[crop], truth0[crop])).save(figures / f"REF-{path.stem}-crop.png")
    recall, precision = score(tissue.mask, truth)
    return recall, precision, f"{mpp} µm/px{' (assumed)' if reader.mpp is None else ''}, " \
        f"thumbnail 1/{d}"


def synthetic_slide(stain: str, root: Path) -> tuple[float, float, str]:
    from histocam.wsi.reader import SlideReader
    from histocam.wsi.synth_slide import design_slide, write_synth_slide
    from histocam.wsi.tissue import slide_tissue

    width, height, seed = 3072, 2048, 0
    made = write_synth_slide(root, width=width, height=height, tile=128, tumours=3, seed=seed,
                             name=stain, stain=stain)
    _, tissue, d = slide_tissue(SlideReader(made.slide), 0.5)
    yy, xx = np.mgrid[0:tissue.mask.shape[0], 0:tissue.mask.shape[1]].astype(np.float64)
    truth = design_slide(width, height, 3, seed).tissue.contains((xx + 0.5) * d, (yy + 0.5) * d)
    recall, precision = score(tissue.mask, truth)
    return recall, precision, f"synthetic {width}×{height}, 0.5 µm/px, thumbnail 1/{d}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slides", type=Path, default=SHARED)
    p.add_argument("--figures", type=Path, default=None, help="write the PNGs checked by eye")
    args = p.parse_args()
    results = []
    for name in GLASS_BOXES:
        path = args.slides / name
        if path.is_file():
            results.append((name, *real_slide(path, args.figures)))
        else:
            print(f"{path}: not found, skipped")
    with tempfile.TemporaryDirectory() as tmp:
        for stain in ("he", "ihc"):
            results.append((f"synthetic {stain}", *synthetic_slide(stain, Path(tmp))))
    print(f"{'slide':32s} {'recall':>7s} {'precision':>9s}  scale")
    for name, recall, precision, how in results:
        print(f"{name:32s} {100 * recall:6.1f}% {100 * precision:8.1f}%  {how}")
    if any(r < 0.95 or p < 0.90 for _, r, p, _ in results):
        raise SystemExit("below the target: recall ≥ 95% and precision ≥ 90%")


if __name__ == "__main__":
    main()
