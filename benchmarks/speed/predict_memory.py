"""Peak memory of `histocam predict` on a whole slide vs the slide's size.

Writes a synthetic tiled pyramidal TIFF of SIZE×SIZE pixels (white glass with discs of textured
pink tissue covering about ``--tissue`` of the area, written tile by tile: the slide is never in
memory), makes a tiny run (a seeded, untrained CAM on the ``test_resnet`` backbone, eval size 64:
the model is not what is measured) and predicts the slide at its level 0 (``--mpp 0.25``, the
slide's own scale) in a fresh process per size, reporting
the peak resident set size (``ru_maxrss``), the tiles and the time. The slide's RGB at level 0
would take 3·SIZE² bytes.

  python benchmarks/speed/predict_memory.py --sizes 8000 32000 --tile 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_slide(path: Path, size: int, tissue: float, seed: int = 0) -> None:
    import tifffile

    rng = np.random.default_rng(seed)
    radius = size / 12
    n_discs = max(1, int(round(tissue * size * size / (np.pi * radius ** 2))))
    centres = rng.uniform(radius, size - radius, (n_discs, 2))
    tile = 512
    texture = np.stack([rng.integers(150, 230, (tile, tile)), rng.integers(40, 140, (tile, tile)),
                        rng.integers(110, 200, (tile, tile))], axis=2).astype(np.uint8)

    def tiles(step: int):
        t = tile
        yy, xx = np.mgrid[:t, :t]
        for r in range(0, size // step, t):
            for c in range(0, size // step, t):
                y, x = (yy + r) * step, (xx + c) * step
                inside = np.zeros((t, t), bool)
                for cy, cx in centres:
                    if abs(cy - (r + t / 2) * step) < radius + t * step and \
                            abs(cx - (c + t / 2) * step) < radius + t * step:
                        inside |= (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2
                yield np.where(inside[..., None], texture, np.uint8(245))

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, step in enumerate((1, 16)):
            n = size // step
            tw.write(tiles(step), shape=(n, n, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", compression="jpeg", subfiletype=1 if k else 0,
                     resolution=(1e4 / (0.25 * step),) * 2, resolutionunit="CENTIMETER")


def make_run(root: Path) -> Path:
    import torch

    from histocam.methods.catalog import create_method
    from histocam.train import RunConfig

    cfg = RunConfig.model_validate({
        "name": "tiny", "out_dir": str(root), "seed": 0,
        "data": {"dataset": "synthetic-node", "resize": 72, "crop": 64, "eval_size": 64,
                 "synthetic": {"size": 256}},
        "method": {"name": "cam", "backbone": {"name": "test_resnet", "pretrained": False}},
        "train": {"eval_batch_size": 64}})
    run = cfg.run_dir
    run.write_config(cfg.to_yaml())
    torch.manual_seed(0)
    state = create_method(cfg.method.for_inference(), 2).state_dict()
    for name in ("best-loc", "best-cl"):
        run.save_checkpoint(name, {"model": state, "epoch": 0, "class_names": ["normal", "tumor"]})
    return run.root


def child(run: str, slide: str, out: str, tile: int, workers: int) -> None:
    """One prediction in this process; prints its JSON report."""
    import torch

    from histocam.predict import Predictor, SlideOptions, predict

    torch.set_num_threads(1)
    Predictor.from_run(run, device="cpu")  # imports and the model: the floor of any prediction
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = predict(run, [slide], out, device="cpu", threshold=0.5, num_workers=workers,
                     slide_options=SlideOptions(tile=tile, map_downsample=16, mpp=0.25))
    summary = result.slides[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_rss_mb": baseline, "peak_rss_mb": peak,
                      "workers_peak_rss_mb":
                          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "tiles": summary["tiles"], "seconds": time.perf_counter() - start,
                      "map_shape": list(np.load(Path(out) / "slides" / "slide" / "slide.map.npy",
                                                mmap_mode="r").shape)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8000, 32000])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--tissue", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, args.tile, args.workers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = make_run(root / "runs")
        for size in args.sizes:
            slide = root / "slide.tif"
            t = time.perf_counter()
            write_slide(slide, size, args.tissue)
            written = time.perf_counter() - t
            report = subprocess.run(
                [sys.executable, __file__, "--child", str(run), str(slide), str(root / f"o{size}"),
                 "--tile", str(args.tile), "--workers", str(args.workers)],
                check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            row = {"size": size, "level0_rgb_mb": 3 * size * size / 2**20,
                   "file_mb": slide.stat().st_size / 2**20, "write_s": written,
                   **json.loads(report)}
            print(json.dumps(row), flush=True)
            slide.unlink()


if __name__ == "__main__":
    main()
