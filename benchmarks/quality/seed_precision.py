"""How right a teacher's pseudo-labels are: the share of PixelCAM's seeds that land on the region
they label.

PixelCAM learns its pixel head from seeds drawn out of the teacher's stored map of each train image
(PixelCAM eq. 3; ``pb``: foreground seeds drawn ∝ the map, background seeds ∝ 1 − map;
``histocam.methods.sampling.expected_seeds`` gives each pixel's probability of being one). For each
teacher of a GlaS cross-validation (its store ``ROOT/<teacher>/fold<f>-s<seed>/cams/
best-loc-train.npz``) and the masks of the same train images, this prints:

- **foreground precision**: the share of the expected foreground seeds that fall on gland pixels,
  beside the share of gland pixels (what seeds placed at random get);
- **background precision**: the share of the expected background seeds off the glands, beside the
  share of non-gland pixels;

pooled over each fold's train images, mean ± std over the folds. Two references go with them: the
darkness map (the colour floor) used as a teacher, on the grid of the first teacher's store, and,
with ``--control TEACHER=FOLDER``, the replaced stores of ``teacher_controls.py`` (e.g. each train
image given another image's map).

The seeds are computed on each image's whole stored map, with the mask averaged onto the map's
grid (the student draws them on the map cropped as its training crop), and the train images are
the teacher's own training images, where its maps may be better than on unseen patients.

Usage: python benchmarks/quality/seed_precision.py runs/cv --teachers cam layercam deepmil \\
           [--seed 0] [--n 5] [--control layercam=runs/cv/controls/permuted-layercam]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from tables import mean_std  # noqa: E402
from teacher_controls import darkness_on_grid  # noqa: E402

from histocam.data.config import DataConfig  # noqa: E402
from histocam.data.open import open_source  # noqa: E402
from histocam.data.transforms import JointTransform  # noqa: E402
from histocam.maps.colour import COLOUR_FLOOR  # noqa: E402
from histocam.maps.store import npz_key  # noqa: E402
from histocam.methods.sampling import expected_seeds  # noqa: E402
from histocam.runs import Run  # noqa: E402


def seed_counts(maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor, n: int
                ) -> np.ndarray:
    """For B×h×w maps in [0, 1], the B×h×w share of gland in each map cell (``masks``) and of
    pixels that count (``valid``): [foreground seeds on glands, foreground seeds, background seeds
    off glands, background seeds, gland cells, cells], each summed over the batch (expected
    ``pb`` seeds, n per region)."""
    seeds = expected_seeds(maps, n, "pb") * valid[:, None]
    bg, fg = seeds[:, 0], seeds[:, 1]
    return np.array([float((fg * masks).sum()), float(fg.sum()),
                     float((bg * (valid - masks)).sum()), float(bg.sum()),
                     float(masks.sum()), float(valid.sum())])


def precisions(counts: np.ndarray) -> dict[str, float]:
    """Percentages from ``seed_counts``: foreground and background precision and their chance."""
    fg_hit, fg, bg_hit, bg, gland, cells = counts
    return {"fg": 100 * fg_hit / fg, "fg_chance": 100 * gland / cells,
            "bg": 100 * bg_hit / bg, "bg_chance": 100 * (cells - gland) / cells}


def fold_counts(data: DataConfig, stores: dict[str, Path], grid: tuple[int, int], n: int
                ) -> dict[str, np.ndarray]:
    """``seed_counts`` over the fold's train images for each store and for the darkness map."""
    dataset = open_source(data).dataset("train")
    transform = JointTransform.from_config(data, train=False)
    opened = {name: np.load(path) for name, path in stores.items()}
    totals = {name: np.zeros(6) for name in (*stores, COLOUR_FLOOR)}
    try:
        for k in range(len(dataset)):
            sample = dataset[k]
            item = transform(sample)
            if not bool(item["has_mask"]):
                continue
            mask = (item["mask"] > 0.5).float()[None, None]
            valid = 1.0 - item["ignore"].float()[None, None]
            maps = {name: torch.from_numpy(npz[npz_key(sample.id)].astype(np.float32))[None]
                    for name, npz in opened.items()}
            maps[COLOUR_FLOOR] = darkness_on_grid(item, grid)
            for name, cam in maps.items():
                size = tuple(cam.shape[-2:])
                cell_valid = F.interpolate(valid, size, mode="area")[:, 0]
                cell_mask = F.interpolate(mask * valid, size, mode="area")[:, 0]
                totals[name] += seed_counts(cam, cell_mask, cell_valid, n)
    finally:
        for npz in opened.values():
            npz.close()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of the crossval folders")
    parser.add_argument("--teachers", nargs="+", required=True, help="teacher folders in ROOT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=5, help="seeds per region (pixelcam-glas.yaml)")
    parser.add_argument("--control", action="append", default=[], metavar="TEACHER=FOLDER",
                        help="a folder of teacher_controls.py stores that replace TEACHER's")
    args = parser.parse_args()
    bad = [c for c in args.control if "=" not in c]
    if bad:
        raise SystemExit(f"--control {bad[0]}: expected TEACHER=FOLDER")
    controls = [c.split("=", 1) for c in args.control]
    per_fold: dict[str, list[dict[str, float]]] = {}
    first = args.root / args.teachers[0]
    for fold_dir in sorted(first.glob(f"fold*-s{args.seed}")):
        stores = {t: args.root / t / fold_dir.name / "cams" / "best-loc-train.npz"
                  for t in args.teachers}
        for teacher, folder in controls:
            for store in sorted((Path(folder) / fold_dir.name).glob("*-maps.npz")):
                stores[f"{teacher}, {store.stem.removesuffix('-maps')} maps"] = store
        missing = [str(p) for p in stores.values() if not p.is_file()]
        if missing:
            raise SystemExit(f"no store {', '.join(missing)}")
        with np.load(stores[args.teachers[0]]) as npz:
            grid = npz[npz.files[0]].shape
        data = Run(fold_dir).config.data
        for name, counts in fold_counts(data, stores, grid, args.n).items():
            per_fold.setdefault(name, []).append(precisions(counts))
    if not per_fold:
        raise SystemExit(f"{first}: no fold folders of seed {args.seed}")
    print(f"Expected pb seeds (n = {args.n} per region) of each teacher's stored train maps, "
          f"seed {args.seed}; % over each fold's train images, mean ± std over "
          f"{len(per_fold[args.teachers[0]])} folds. The darkness map on a {grid[0]}×{grid[1]} "
          "grid.\n")
    print("| teacher | foreground seeds on glands | glands | background seeds off glands | "
          "not glands |\n|---|---|---|---|---|")
    for name, folds in per_fold.items():
        cols = [mean_std([f[k] for f in folds]) for k in ("fg", "fg_chance", "bg", "bg_chance")]
        print(f"| {name} | " + " | ".join(cols) + " |")
    gains = {name: statistics.mean(f["fg"] - f["fg_chance"] + f["bg"] - f["bg_chance"]
                                   for f in folds) for name, folds in per_fold.items()}
    print("\nSum of both precisions' gains over chance, mean over folds: "
          + "; ".join(f"{name} {gain:+.1f}" for name, gain in gains.items()))


if __name__ == "__main__":
    main()
