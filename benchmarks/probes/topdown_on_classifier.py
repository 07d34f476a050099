"""Top-down maps of trained classifiers: test PxAP of the classifier's own map and of GradCAM,
GradCAM++, XGradCAM and LayerCAM computed from the *same* weights (a run's B-LOC and B-CL
checkpoints), e.g. of a CAM or a WILDCAT run. A top-down method is a classifier plus a map
(``{name: gradcampp, classifier: wildcat}``), so its B-CL checkpoint is the classifier's: the B-CL
row is what training the top-down method would give. B-LOC differs from the protocol: the
checkpoint was selected with the classifier's own map rather than each method's.

Usage: python benchmarks/probes/topdown_on_classifier.py runs/exp/glas/cam-s0 runs/exp/glas/cam-s1 ...
"""

from __future__ import annotations

import statistics
import sys

import torch

from histocam.data.open import open_source
from histocam.methods import create_method
from histocam.metrics import PixelHistogram
from histocam.runs import Run
from histocam.train.split_pass import evaluate_split

TOP_DOWN = ["gradcam", "gradcampp", "xgradcam", "layercam"]


def main(runs: list[str]) -> None:
    scores: dict[tuple[str, str], list[float]] = {}
    own = None
    for path in runs:
        run = Run(path)
        own = run.config.method.name
        test = open_source(run.config.data).dataset("test")
        for ckpt in ("best-loc", "best-cl"):
            trained, names = run.method(ckpt)
            classifier = run.config.method.for_inference()
            for name in [own, *TOP_DOWN]:
                if name == own:
                    method = trained
                else:
                    method = create_method({
                        "name": name, "backbone": classifier.backbone.model_dump(),
                        "classifier": classifier.model_dump(exclude={"backbone"})}, len(names))
                    method.load_initial_state(trained.state_dict())
                pixels = PixelHistogram()
                evaluate_split(method.eval(), test, run.config.data, torch.device("cpu"),
                               {"pixels": pixels}, batch_size=16)
                scores.setdefault((name, ckpt), []).append(pixels.pxap)
                print(f"{path} {ckpt} {name}: {pixels.pxap:.2f}", flush=True)
    print(f"test PxAP over {len(runs)} runs (mean ± std): " + ", ".join(runs))
    print("| maps | B-LOC | B-CL |\n|---|---|---|")
    for name in [own, *TOP_DOWN]:
        cells = []
        for ckpt in ("best-loc", "best-cl"):
            v = scores[(name, ckpt)]
            cells.append(f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1
                         else f"{v[0]:.1f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
