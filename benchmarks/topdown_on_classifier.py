"""Top-down maps of trained GAP classifiers: test PxAP of CAM, GradCAM, GradCAM++, XGradCAM and
LayerCAM computed from the *same* weights (a CAM run's B-LOC and B-CL checkpoints).

This is cheaper than one training run per top-down method; the difference with the protocol is
that the checkpoints were selected with CAM's valpx PxAP rather than each method's own.

Usage: python benchmarks/topdown_on_classifier.py runs/exp/glas/cam-s0 runs/exp/glas/cam-s1 ...
"""

from __future__ import annotations

import statistics
import sys

import torch

from histocam.data.open import open_source
from histocam.methods import create_method
from histocam.train.evaluate import evaluate_split
from histocam.train.trainer import load_method

METHODS = ["cam", "gradcam", "gradcampp", "xgradcam", "layercam"]


def main(runs: list[str]) -> None:
    scores: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for ckpt in ("best-loc", "best-cl"):
            trained, config, names = load_method(run, ckpt)
            test = open_source(config.data).dataset("test")
            for name in METHODS:
                cfg = config.method.for_inference().model_dump(mode="json") | {"name": name}
                method = create_method(cfg, len(names))
                method.load_state_dict(trained.state_dict())
                result = evaluate_split(method, test, config.data, torch.device("cpu"),
                                        batch_size=16)
                scores.setdefault((name, ckpt), []).append(result.pxap)
    print(f"test PxAP over {len(runs)} runs (mean ± std): " + ", ".join(runs))
    print("| maps | B-LOC | B-CL |\n|---|---|---|")
    for name in METHODS:
        cells = []
        for ckpt in ("best-loc", "best-cl"):
            v = scores[(name, ckpt)]
            cells.append(f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1
                         else f"{v[0]:.1f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
