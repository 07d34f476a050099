"""Speed of `histocam predict` on slides vs the raw model on the same tiles in memory.

For each slide (a synthetic one written at the run's own scale, and any given with ``--slides``,
e.g. the shared Aperio slides), in one process:

1. ``histocam.predict.predict`` on the slide, timed as a whole (``end_to_end``: tissue detection,
   tile reading in DataLoader workers, inference, stitching, pyramidal TIFF, overlay, GeoJSON);
   the slide's own summary gives the rate of its inference loop (``tiles_per_second``: tiles read,
   resized, inferred and stored);
2. the same tiles (the stored grid, read once with the same reader, level and resize as the
   slide's DataLoader reads them) stacked in memory, and the same ``Predictor`` call the slide's
   loop makes (``classify`` for a probability slide map, the maps too for ``--slide-map map``) on
   batches of the same size, after one warm-up batch: ``raw``.

Prints, per slide: tiles, the three rates in tiles/s, ``inference_ratio`` = slide loop / raw
(target ≥ 0.9 on CPU) and ``end_to_end_ratio`` = end to end / raw (target ≥ 0.8). Timings on a
shared machine are noisy: run it on an idle one.

  python benchmarks/speed/predict_speed.py RUN [--size 4096] [--slides ../shared/data/slides/*.svs]
      [--slide-mpp 1.0] [--workers 2] [--batch-size 32] [--device cpu] [--slide-map auto]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def raw_rate(predictor, tiles: torch.Tensor, batch: int, kind: str) -> float:
    """Tiles per second of the predictor alone on in-memory tiles (module docstring, step 2)."""
    step = predictor.classify if kind == "probability" else predictor
    step(tiles[:batch])  # warm-up
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(tiles), batch):
        step(tiles[i:i + batch])
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return len(tiles) / (time.perf_counter() - start)


def measure(run, slide: Path, out: Path, args, batch: int) -> dict:
    from histocam.predict import Predictor, SlideOptions, predict
    from histocam.wsi.grid import TileGrid
    from histocam.wsi.tiles import TileDataset

    options = SlideOptions(keep_work=True, slide_map=args.slide_map, slide_mpp=args.slide_mpp)
    start = time.perf_counter()
    result = predict(run, [slide], out, checkpoint=args.checkpoint, device=args.device,
                     batch_size=batch, num_workers=args.workers, slide_options=options,
                     skip_errors=False)
    end_to_end = time.perf_counter() - start
    summary = result.slides[0]
    settings = summary["settings"]
    with np.load(out / "slides" / slide.stem / "work" / "grid.npz") as z:
        positions = z["positions"]
    size = tuple(int(np.ceil(d / settings["scale"])) for d in settings["dimensions"])
    grid = TileGrid(settings["tile"], settings["overlap"], settings["scale"],
                    settings["map_downsample"], size, positions, np.ones(len(positions)))
    predictor = Predictor.from_run(run, args.checkpoint, device=args.device)
    dataset = TileDataset(slide, summary["backend"], grid, np.arange(len(positions)),
                          predictor.eval_size)
    tiles = torch.stack([dataset[i][1] for i in range(len(dataset))])
    raw = raw_rate(predictor, tiles, batch, summary["slide_map"])
    loop = summary["tiles_per_second"]
    return {"slide": slide.name, "tiles": len(tiles), "slide_map": summary["slide_map"],
            "tile_mpp": summary["scale"]["tile_mpp"], "eval_size": predictor.eval_size,
            "slide_tiles_per_s": round(loop, 2),
            "end_to_end_tiles_per_s": round(len(tiles) / end_to_end, 2),
            "raw_tiles_per_s": round(raw, 2), "inference_ratio": round(loop / raw, 3),
            "end_to_end_ratio": round(len(tiles) / end_to_end / raw, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--size", default="4096", help="W or WxH level-0 pixels of the synthetic slide")
    p.add_argument("--slides", type=Path, nargs="*", default=[], help="real slides too")
    p.add_argument("--slide-mpp", type=float, default=None, help="for slides that record none")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's eval batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default="best-loc")
    p.add_argument("--slide-map", default="auto", choices=["auto", "probability", "map"])
    args = p.parse_args()

    from histocam.predict.api import default_tile
    from histocam.runs import Run
    from histocam.wsi.synth_slide import write_synth_slide

    run = Run(args.run)
    batch = args.batch_size or run.config.train.eval_batch_size
    width, height = (int(v) for v in (args.size.lower().split("x") * 2)[:2])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = write_synth_slide(root / "slide", width=width, height=height,
                                 tile=max(64, default_tile(run)), tumours=3, seed=0, name="synthetic")
        for k, slide in enumerate([made.slide, *args.slides]):
            rows.append(measure(run, slide, root / f"pred-{k}", args, batch))
    print(json.dumps({"run": str(args.run), "device": args.device, "batch_size": batch,
                      "workers": args.workers, "torch_threads": torch.get_num_threads(),
                      "slides": rows, "note": "one run each; noisy on a shared machine"},
                     indent=1))


if __name__ == "__main__":
    main()
