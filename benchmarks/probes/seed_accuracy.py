"""How right are the pseudo-labels a seeded student (PixelCAM, NEGEV) draws from a teacher's maps?

For each run, its stored B-LOC maps of the train split (``histocam cams RUN``, exported
here if missing) are upsampled to the evaluation size and compared with the train masks. With the
``pb`` sampler (PixelCAM §2, NEGEV eq. 2) a foreground seed is drawn with probability ∝ C and a
background seed ∝ 1 − C, so the expected share of correct seeds in an image is

  FG seeds: Σ C·M / Σ C          BG seeds: Σ (1 − C)(1 − M) / Σ (1 − C)

and a map that carries no information (C constant) gets the foreground fraction and the background
fraction. Printed per class: the mean over images of both shares next to those chance levels
(images without foreground count for the BG share only), and the same for the ``th`` sampler
(uniform inside / outside the map's Otsu region).

Usage: python benchmarks/probes/seed_accuracy.py RUN [RUN ...]
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import torch

from histocam.data.open import open_source
from histocam.data.transforms import JointTransform, resize_maps
from histocam.maps.store import load_cams
from histocam.methods.sampling import otsu_threshold
from histocam.runs import Run


def shares(cam: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Expected correct shares of pb and th seeds, and their chance levels, for one image."""
    fg = mask.float()
    out = {"bg_chance": float(1 - fg.mean()), "pb_bg": float(((1 - cam) * (1 - fg)).sum()
                                                              / (1 - cam).sum().clamp_min(1e-8))}
    region = cam > otsu_threshold(cam[None])[0]
    out["th_bg"] = float((1 - fg)[~region].mean()) if bool((~region).any()) else float("nan")
    if fg.sum() > 0:
        out["fg_chance"] = float(fg.mean())
        out["pb_fg"] = float((cam * fg).sum() / cam.sum().clamp_min(1e-8))
        out["th_fg"] = float(fg[region].mean()) if bool(region.any()) else float("nan")
    return out


def main() -> None:
    keys = ("pb_fg", "th_fg", "fg_chance", "pb_bg", "th_bg", "bg_chance")
    print("| run | class | images | FG seeds right: pb | th | chance (FG %) | BG seeds right: pb "
          "| th | chance (BG %) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sys.argv[1:]:
        run = Run(path).require_trained()
        npz = run.dir.stored_maps("best-loc", "train")
        if not npz.is_file():
            run.export_cams("best-loc", "train")
        source = open_source(run.config.data)
        dataset = source.dataset("train")
        cams = load_cams(npz, run.config.data, "train")
        transform = JointTransform.from_config(run.config.data, train=False)
        rows: dict[str, list[dict]] = defaultdict(list)
        for i in range(len(dataset)):
            sample = dataset[i]
            if sample.mask is None:
                continue
            mask = transform(sample)["mask"] > 0.5
            cam = resize_maps(torch.as_tensor(cams[sample.id]).float()[None, None],
                              tuple(mask.shape))[0, 0].clamp(0, 1)
            rows[source.class_names[sample.label]].append(shares(cam, mask))
        for name, items in sorted(rows.items()):
            means = {k: 100 * np.nanmean([r[k] for r in items if k in r])
                     if any(k in r for r in items) else float("nan") for k in keys}
            print(f"| {run.dir.name} | {name} | {len(items)} | "
                  + " | ".join(f"{means[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
