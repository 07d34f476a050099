"""PxAP of hand-made colour maps on GlaS: what a map that learnt nothing scores.

The all-ones map (``chance``, the foreground fraction) is the floor every PxAP table shows. A map
that only knows that glands are darker than stroma is a second reference: a weakly supervised map
below it has not learnt more than colour. Each map is computed from the RGB image alone, min–max
normalised per image like a CAM, and scored with the protocol's PxAP on the same images and at the
same size as the GlaS recipe (``benchmarks/configs/glas.yaml``: 448×448, split seed 0).

Usage:
  python benchmarks/colour_baseline.py [--data ../shared/data/glas-train] [--split-seed 0] [--size 448]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2hed, rgb2hsv

from histocam.data.glas import read_glas
from histocam.metrics import PxAP

MAPS = {
    "all ones (chance)": lambda rgb: np.ones(rgb.shape[:2]),
    "darkness (1 − mean RGB)": lambda rgb: 1.0 - rgb.mean(axis=2),
    "haematoxylin (HED deconvolution)": lambda rgb: rgb2hed(rgb)[..., 0],
    "eosin (HED deconvolution)": lambda rgb: rgb2hed(rgb)[..., 1],
    "saturation (HSV)": lambda rgb: rgb2hsv(rgb)[..., 1],
    "brightness (mean RGB)": lambda rgb: rgb.mean(axis=2),
}


def min_max(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/glas-train")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=448)
    args = parser.parse_args()
    layout = read_glas(args.data, seed=args.split_seed)
    splits = [s for s in ("test", "valcl") if layout.splits.get(s)]
    scores = {}
    for split in splits:
        meters = {name: PxAP() for name in MAPS}
        for record in layout.splits[split]:
            image = Image.open(record.image_path).convert("RGB")
            rgb = np.asarray(image.resize((args.size, args.size), Image.BILINEAR)) / 255.0
            mask = np.asarray(Image.open(record.mask_path).resize((args.size, args.size),
                                                                  Image.NEAREST)) > 0
            for name, make in MAPS.items():
                cam = torch.from_numpy(min_max(make(rgb)).astype(np.float32))[None]
                meters[name].update(cam, torch.from_numpy(mask)[None])
        scores[split] = {name: meter.compute() for name, meter in meters.items()}
    counts = " / ".join(f"{s} {len(layout.splits[s])} images" for s in splits)
    print(f"GlaS at {args.size}×{args.size}, split seed {args.split_seed}: {counts}\n")
    print("| map | " + " | ".join(f"{s} PxAP" for s in splits) + " |")
    print("|---|" + "---|" * len(splits))
    for name in MAPS:
        print(f"| {name} | " + " | ".join(f"{scores[s][name]:.1f}" for s in splits) + " |")


if __name__ == "__main__":
    main()
