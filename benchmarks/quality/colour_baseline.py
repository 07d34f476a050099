"""PxAP of hand-made colour maps: what a map that learnt nothing scores.

The all-ones map (``chance``, the foreground fraction) is the floor every PxAP table shows. A map
that only knows that glands are darker than stroma is a second reference: a weakly supervised map
below it has not learnt more than colour. Each map is computed from the RGB image alone, min–max
normalised per image like a CAM, and scored with the protocol's PxAP on the held-out test and the
valcl images, at the evaluation size of the configuration (the GlaS recipe,
``benchmarks/configs/glas.yaml``: 448×448, split seed 0; ``colon.yaml``: 336×336).

Usage:
  python benchmarks/quality/colour_baseline.py [--config benchmarks/configs/glas.yaml] [--set key=value ...]
  python benchmarks/quality/colour_baseline.py --config benchmarks/configs/colon.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from histocam.core.configs import apply_overrides
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.maps.colour import COLOUR_MAPS, colour_map_pxap

LABELS = {"darkness": "darkness (1 − mean RGB)", "haematoxylin": "haematoxylin (HED deconvolution)",
          "eosin": "eosin (HED deconvolution)", "saturation": "saturation (HSV)",
          "brightness": "brightness (mean RGB)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="benchmarks/configs/glas.yaml",
                        help="a run config: its data section is read")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. data.split_seed=1")
    args = parser.parse_args()
    tree = yaml.safe_load(Path(args.config).read_text())
    config = DataConfig.model_validate(apply_overrides(tree, args.set)["data"])
    source = open_source(config)
    splits = ("test", "valcl")
    scores = {s: colour_map_pxap(source.dataset(s), config, list(COLOUR_MAPS)) for s in splits}
    where = " / ".join(f"{s} {len(source.dataset(s))} images" for s in splits)
    size = config.eval_size
    print(f"{config.dataset} at {size}×{size}, split seed {config.split_seed}: {where}\n")
    print("| map | " + " | ".join(f"{s} PxAP" for s in splits) + " |")
    print("|---|" + "---|" * len(splits))
    for name in scores[splits[0]]:
        label = "all ones (chance)" if name == "chance" else LABELS[name]
        print(f"| {label} | " + " | ".join(f"{scores[s][name]:.1f}" for s in splits) + " |")


if __name__ == "__main__":
    main()
