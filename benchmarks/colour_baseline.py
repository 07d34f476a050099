"""PxAP of hand-made colour maps: what a map that learnt nothing scores.

The all-ones map (``chance``, the foreground fraction) is the floor every PxAP table shows. A map
that only knows that glands are darker than stroma is a second reference: a weakly supervised map
below it has not learnt more than colour. Each map is computed from the RGB image alone, min–max
normalised per image like a CAM, and scored with the protocol's PxAP on the held-out test and the
valcl images, at the evaluation size of the configuration (the GlaS recipe,
``benchmarks/configs/glas.yaml``: 448×448, split seed 0; ``colon.yaml``: 336×336).

Usage:
  python benchmarks/colour_baseline.py [--config benchmarks/configs/glas.yaml] [--set key=value ...]
  python benchmarks/colour_baseline.py --config benchmarks/configs/colon.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
from skimage.color import rgb2hed, rgb2hsv

from histocam.cams.normalize import minmax_normalize
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.metrics import PxAP
from histocam.metrics.pxap import chance_pxap
from histocam.train.config import apply_overrides

MAPS = {
    "darkness (1 − mean RGB)": lambda rgb: 1.0 - rgb.mean(axis=2),
    "haematoxylin (HED deconvolution)": lambda rgb: rgb2hed(rgb)[..., 0],
    "eosin (HED deconvolution)": lambda rgb: rgb2hed(rgb)[..., 1],
    "saturation (HSV)": lambda rgb: rgb2hsv(rgb)[..., 1],
    "brightness (mean RGB)": lambda rgb: rgb.mean(axis=2),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="benchmarks/configs/glas.yaml",
                        help="a run config: its data section is read")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. data.split_seed=1")
    args = parser.parse_args()
    tree = yaml.safe_load(Path(args.config).read_text())
    config = DataConfig.model_validate(apply_overrides(tree, args.set)["data"])
    size = config.eval_size
    transform = JointTransform.from_config(config, train=False)  # the evaluation resizing
    source = open_source(config)
    splits = ("test", "valcl")
    scores, counts = {}, {}
    for split in splits:
        dataset = source.dataset(split)
        counts[split] = len(dataset)
        meters = {name: PxAP() for name in MAPS}
        for k in range(len(dataset)):
            item = transform(dataset[k])
            rgb = item["image"].permute(1, 2, 0).double().numpy()
            mask, ignore = item["mask"][None] > 0.5, item["ignore"][None]
            for name, make in MAPS.items():
                cam = torch.from_numpy(make(rgb).astype(np.float32))[None]
                meters[name].update(minmax_normalize(cam, relu=False), mask, ignore=ignore)
        any_meter = next(iter(meters.values()))  # the same pixels in every meter
        scores[split] = {"all ones (chance)": chance_pxap(any_meter.fg.numpy(), any_meter.bg.numpy()),
                         **{name: meter.compute() for name, meter in meters.items()}}
    where = " / ".join(f"{s} {counts[s]} images" for s in splits)
    print(f"{config.dataset} at {size}×{size}, split seed {config.split_seed}: {where}\n")
    print("| map | " + " | ".join(f"{s} PxAP" for s in splits) + " |")
    print("|---|" + "---|" * len(splits))
    for name in scores[splits[0]]:
        print(f"| {name} | " + " | ".join(f"{scores[s][name]:.1f}" for s in splits) + " |")


if __name__ == "__main__":
    main()
