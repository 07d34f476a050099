"""Speed of `histocam predict` on a slide vs the raw model on the same tiles in memory.

Writes a synthetic slide (``histocam data synth-slide``, at the run's tile size), predicts it with
RUN, and then runs the same ``Predictor`` (labels and maps of the map checkpoint, the work of one
slide batch) on the same tiles already in memory — read once from the slide, resized to the run's
eval size, as the slide's DataLoader gives them — in batches of the same size. Prints:

- ``slide_tiles_per_s``: tiles / seconds of the slide's inference loop (tiles read and resized in
  DataLoader workers, inferred, each batch's maps reduced and stored): ``tiles_per_second`` of the
  slide's summary;
- ``slide_end_to_end_tiles_per_s``: tiles / seconds of the whole ``predict`` call (tissue
  detection, inference, stitching, pyramidal TIFF, overlay, GeoJSON);
- ``raw_tiles_per_s``: the model alone on the in-memory tiles (one warm-up batch first);
- ``ratio`` = slide / raw (the target: ≥ 0.8) and ``ratio_end_to_end``.

One run of each; on a shared machine the timings are noisy.

  python benchmarks/speed/predict_speed.py RUN --size 2048 --workers 2 [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--size", default="2048", help="W or WxH level-0 pixels of the slide")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's eval batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default="best-loc")
    args = p.parse_args()

    from histocam.data.synth_slide import write_synth_slide
    from histocam.predict import Predictor, SlideOptions, predict
    from histocam.predict.api import default_tile
    from histocam.predict.slides import TileDataset, TileGrid
    from histocam.runs import Run

    run = Run(args.run)
    width, height = (int(v) for v in (args.size.lower().split("x") * 2)[:2])
    batch = args.batch_size or run.config.train.eval_batch_size
    tile = default_tile(run)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = write_synth_slide(root / "slide", width=width, height=height, tile=tile, tumours=3,
                                 seed=0, name="s")
        start = time.perf_counter()
        result = predict(run, [made.slide], root / "pred", checkpoint=args.checkpoint,
                         device=args.device, threshold=0.5, batch_size=batch,
                         num_workers=args.workers, slide_options=SlideOptions(keep_work=True))
        end_to_end = time.perf_counter() - start
        summary = result.slides[0]
        with np.load(root / "pred" / "s.work" / "grid.npz") as z:
            positions = z["positions"]
        settings = summary["settings"]
        grid = TileGrid(settings["tile"], settings["overlap"], settings["scale"],
                        settings["map_downsample"], (width, height), positions,
                        np.ones(len(positions)))
        predictor = Predictor.from_run(run, args.checkpoint, device=args.device, threshold=0.5)
        dataset = TileDataset(made.slide, "auto", grid, np.arange(len(positions)),
                              predictor.eval_size)
        tiles = torch.stack([dataset[i][1] for i in range(len(dataset))])
        predictor(tiles[:batch])  # warm-up
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(tiles), batch):
            predictor(tiles[i:i + batch])
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        raw = len(tiles) / (time.perf_counter() - start)
    slide_rate = summary["tiles_per_second"]
    print(json.dumps({
        "run": str(args.run), "device": args.device, "slide": f"{width}x{height}", "tile": tile,
        "eval_size": predictor.eval_size, "tiles": len(tiles), "batch_size": batch,
        "workers": args.workers, "torch_threads": torch.get_num_threads(),
        "slide_tiles_per_s": round(slide_rate, 2),
        "slide_end_to_end_tiles_per_s": round(len(tiles) / end_to_end, 2),
        "raw_tiles_per_s": round(raw, 2), "ratio": round(slide_rate / raw, 3),
        "ratio_end_to_end": round(len(tiles) / end_to_end / raw, 3),
        "note": "one run each on a shared machine: noisy"}, indent=1))


if __name__ == "__main__":
    main()
