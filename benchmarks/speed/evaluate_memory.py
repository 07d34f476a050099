"""Peak resident memory of `histocam evaluate` on a GlaS-sized run: 448-px images, a map averaged
over the 8 views of d8, EfficientNet-Lite0, the run's evaluation batch of 64.

Trains nothing: the GlaS LayerCAM recipe (benchmarks/configs/glas-layercam.yaml) is written as a
run with an untrained model (the weights do not change what a pass holds) whose data is a CSV
manifest of the shared GlaS images (../shared/data/glas-train: --valpx per class as valcl and
valpx, the next --test images as test), or of synthetic-colon images rendered at 448 px when the
GlaS images are absent. `histocam evaluate RUN --checkpoint best-loc` then runs in a child process
whose peak resident set size (``ru_maxrss``) is reported with the evaluation batch it chose from
the memory budget (``histocam.train.memory``), or the one given with --batch-size.

  python benchmarks/speed/evaluate_memory.py                  # the budget's batch
  python benchmarks/speed/evaluate_memory.py --batch-size 8   # a fixed batch, for comparison
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "benchmarks" / "configs" / "glas-layercam.yaml"
GLAS = ROOT.parent / "shared" / "data" / "glas-train"


def glas_rows(n_test: int, per_class: int) -> list[tuple[Path, str, Path | None, str]]:
    """(image, label, mask, split) of the shared GlaS images."""
    from histocam.data import DataConfig, open_source

    source = open_source(DataConfig(dataset="glas", root=GLAS))
    records = {r.id: r for split in ("train", "valcl", "test") for r in source.dataset(split).records}
    names = source.class_names
    by_class: dict[int, list] = {}
    for record in records.values():
        by_class.setdefault(record.label, []).append(record)
    val = [r for c in sorted(by_class) for r in by_class[c][:per_class]]
    rest = [r for r in records.values() if r not in val][:n_test]
    rows = []
    for r in val:
        rows += [(r.image_path, names[r.label], r.mask_path, s) for s in ("valcl", "valpx")]
    return rows + [(r.image_path, names[r.label], r.mask_path, "test") for r in rest]


def synthetic_rows(folder: Path, size: int, n_test: int, per_class: int) -> list:
    """(image, label, mask, split) of synthetic-colon images rendered at ``size`` px."""
    import numpy as np
    from PIL import Image

    from histocam.data.config import SyntheticConfig
    from histocam.data.synthetic import SyntheticSource

    source = SyntheticSource("colon", SyntheticConfig(size=size, n_test=max(n_test, 2),
                                                      n_valcl=max(2 * per_class, 2)))
    rows = []
    for split, take in (("test", n_test), ("valcl", 2 * per_class)):
        dataset = source.dataset(split)
        for i in range(take):
            sample = dataset[i]
            image, mask = folder / f"{sample.id}.png", folder / f"{sample.id}-mask.png"
            Image.fromarray(sample.image).save(image)
            Image.fromarray(sample.mask.astype(np.uint8) * 255).save(mask)
            label = source.class_names[sample.label]
            splits = ("valcl", "valpx") if split == "valcl" else ("test",)
            rows += [(image, label, mask, s) for s in splits]
    return rows


def make_run(root: Path, args: argparse.Namespace) -> tuple[Path, str]:
    import torch

    from histocam.methods.catalog import create_method
    from histocam.train import RunConfig

    data = root / "data"
    data.mkdir(parents=True)
    use_glas = GLAS.is_dir() and not args.synthetic
    rows = (glas_rows(args.test, args.valpx) if use_glas
            else synthetic_rows(data, args.size, args.test, args.valpx))
    lines = [f"{image},{label},{mask or ''},{split}" for image, label, mask, split in rows]
    (data / "set.csv").write_text("image,label,mask,split\n" + "\n".join(lines) + "\n")
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["method"]["map_tta"] = args.views
    recipe["method"]["backbone"]["pretrained"] = False  # untrained: same tensors, no weight file
    cfg = RunConfig.model_validate({
        **recipe, "name": "run", "out_dir": str(root / "runs"), "device": "cpu",
        "data": {"dataset": str(data / "set.csv"), "classes": ["benign", "malignant"],
                 "allow_outside_root": True, "resize": args.size, "crop": min(224, args.size),
                 "eval_size": args.size},
        "train": {**recipe["train"], "eval_batch_size": 64}})
    run = cfg.run_dir
    run.write_config(cfg.to_yaml())
    torch.manual_seed(0)
    state = create_method(cfg.method.for_inference(), 2).state_dict()
    for name in ("best-loc", "best-cl"):
        run.save_checkpoint(name, {"model": state, "epoch": 0,
                                   "class_names": ["benign", "malignant"]})
    return run.root, "GlaS train images (shared)" if use_glas else "synthetic-colon"


def chosen_batch(run: Path, size: int) -> int:
    from histocam.runs import Run
    from histocam.train.memory import fit_batch

    r = Run(run)
    method, _ = r.method("best-loc", "cpu")
    return fit_batch(method, size, "cpu", limit=r.config.train.eval_batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=448, help="image (evaluation) size")
    p.add_argument("--views", default="d8", choices=["none", "flips", "d8"])
    p.add_argument("--test", type=int, default=16, help="test images")
    p.add_argument("--valpx", type=int, default=2, help="valpx images per class")
    p.add_argument("--batch-size", type=int, help="a fixed batch instead of the budget's")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the evaluation")
    p.add_argument("--synthetic", action="store_true", help="synthetic images even with GlaS")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, images = make_run(Path(tmp), args)
        command = [sys.executable, "-m", "histocam", "evaluate", str(run), "--checkpoint",
                   "best-loc", "--device", "cpu", "--json", "--quiet"]
        command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode:
            sys.exit(done.stderr.strip().splitlines()[-1])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        metrics = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps({
            "images": images, "size": args.size, "views": args.views,
            "method": "layercam (efficientnet_lite0)", "test_images": args.test,
            "run_eval_batch_size": 64,
            "batch": args.batch_size or chosen_batch(run, args.size),
            "batch_from": "--batch-size" if args.batch_size else "memory budget",
            "peak_rss_gb": round(peak, 3), "target_gb": 4.0,
            "pxap_untrained": metrics.get("pxap")}))


if __name__ == "__main__":
    main()
