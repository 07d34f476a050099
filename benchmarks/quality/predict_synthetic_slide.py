"""End-to-end check of `histocam predict` on a synthetic slide with a known tumour region.

Writes a synthetic slide (``histocam data synth-slide``: synthetic-node tissue rendered at the run's
own tile size, so level 0 is the scale the run was trained at), predicts it with RUN (a run trained
on synthetic-node, with τ* recorded by ``histocam evaluate RUN --checkpoint best-loc``), and prints:

- ``pxap``: slide-level PxAP (Choe et al. 2020; survey eqs. 14–16; ``histocam.metrics.PxAP``) of the
  stitched heatmap against the known mask at the map's resolution (a map pixel is tumour when at
  least half of its level-0 block is), over the whole slide; ``chance`` = the foreground fraction;
- ``pxap_tissue``: the same over tissue pixels only (the glass, which no tile covers, left out);
- ``iou``: IoU of the τ* region polygons (``STEM.region.geojson``) with the true tumour polygons
  (``STEM.geojson``), by shapely in level-0 pixel coordinates, with both GeoJSON files checked valid.

  python benchmarks/quality/predict_synthetic_slide.py RUN --size 3072x2304 --seed 0 [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def block_fraction(mask: np.ndarray, d: int, shape: tuple[int, int]) -> np.ndarray:
    """Fraction of True pixels in each d×d block, on a map of ``shape`` (edge blocks: of the
    pixels present)."""
    h, w = mask.shape
    padded = np.full((shape[0] * d, shape[1] * d), np.nan, np.float32)
    padded[:h, :w] = mask
    return np.nanmean(padded.reshape(shape[0], d, shape[1], d), axis=(1, 3))


def polygons(path: Path):
    from shapely.geometry import shape
    from shapely.ops import unary_union

    shapes = [shape(f["geometry"]) for f in json.loads(path.read_text())["features"]]
    invalid = [i for i, s in enumerate(shapes) if not s.is_valid]
    if invalid:
        raise SystemExit(f"{path}: invalid polygons {invalid}")
    return unary_union(shapes) if shapes else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--size", default="3072x2304", help="W or WxH level-0 pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tumours", type=int, default=3)
    p.add_argument("--map-downsample", type=int, default=8)
    p.add_argument("--checkpoint", default="best-loc")
    p.add_argument("--slide-map", default="auto", choices=["auto", "probability", "map"],
                   help="the slide map scored (histocam predict --slide-map)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="keep the slide and outputs here")
    args = p.parse_args()

    from histocam.metrics import Batch
    from histocam.metrics.pxap import PxAP, chance_pxap
    from histocam.predict import SlideOptions, predict
    from histocam.predict.api import default_tile
    from histocam.runs import Run
    from histocam.wsi.synth_slide import Blob, write_synth_slide

    run = Run(args.run)
    width, height = (int(v) for v in (args.size.lower().split("x") * 2)[:2])
    tile = default_tile(run)
    keep = args.out
    tmp = tempfile.TemporaryDirectory() if keep is None else None
    root = keep or Path(tmp.name)
    start = time.perf_counter()
    made = write_synth_slide(root / "slide", width=width, height=height, tile=tile,
                             tumours=args.tumours, seed=args.seed, name="synthetic-slide")
    written = time.perf_counter() - start
    start = time.perf_counter()
    result = predict(run, [made.slide], root / "pred", checkpoint=args.checkpoint, device="cpu",
                     num_workers=args.workers,
                     slide_options=SlideOptions(map_downsample=args.map_downsample,
                                                slide_map=args.slide_map))
    seconds = time.perf_counter() - start
    summary = result.slides[0]
    folder = root / "pred" / "slides" / "synthetic-slide"
    heat = np.load(folder / "synthetic-slide.map.npy").astype(np.float32)
    d = int(summary["map_level0_downsample"])
    with tifffile.TiffFile(made.mask_tif) as tif:
        level0 = tif.pages[0].asarray() > 0
    truth = block_fraction(level0, d, heat.shape) >= 0.5
    design = json.loads(made.summary.read_text())["design"]["tissue"]
    yy, xx = (np.mgrid[0:heat.shape[0], 0:heat.shape[1]] + 0.5) * d
    tissue = Blob(**design).contains(xx, yy)
    rows = {}
    for tag, ignore in (("", None), ("_tissue", ~tissue)):
        metric = PxAP()
        metric.update(Batch(maps=torch.from_numpy(heat)[None], masks=torch.from_numpy(truth)[None],
                            ignore=None if ignore is None else torch.from_numpy(ignore)[None]))
        rows[f"pxap{tag}"] = metric.compute()
        rows[f"chance{tag}"] = chance_pxap(metric.fg.numpy(), metric.bg.numpy())
    true_region = polygons(made.geojson)
    region_file = folder / "synthetic-slide.region.geojson"
    iou = None
    if region_file.is_file():
        found = polygons(region_file)
        if found is not None and true_region is not None:
            iou = found.intersection(true_region).area / found.union(true_region).area
        elif true_region is not None:
            iou = 0.0
    print(json.dumps({
        "run": str(args.run), "checkpoint": args.checkpoint, "slide": f"{width}x{height}",
        "tile": tile, "tiles": summary["tiles"], "map_level0_downsample": d,
        "tumour_fraction_of_tissue": made.tumour_pixels / made.tissue_pixels,
        **{k: round(v, 2) for k, v in rows.items()},
        "iou": None if iou is None else round(iou, 3), "slide_map": summary["slide_map"],
        "region": summary.get("region"), "label": summary.get("label"),
        "score": summary.get("score"), "rule": summary.get("rule"),
        "probabilities": summary.get("probabilities"), "write_s": round(written, 1),
        "predict_s": round(seconds, 1), "map_shape": list(heat.shape),
        "outputs": str(root) if keep else None}, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
