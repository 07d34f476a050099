"""Trained runs re-evaluated with each set of test-time views (``method.map_tta``).

For each run and view set, the run's checkpoint (chosen by its own B-LOC/B-CL selection, i.e.
without views for a run trained without them) makes its maps averaged over the views
(``histocam.maps.views``), and the script prints valcl and test PxAP with their chance level and,
per class, the mean per-image AP next to the mean foreground fraction. Nothing is written under
the runs; the choice between view sets is made on valcl, the test part is only reported.

Usage (docs/results.md, the views on GlaS):
  python benchmarks/probes/map_views.py runs/exp13/glas/cam-s0 runs/exp13/glas/cam-s1 \\
      runs/exp13/glas/cam-s2 --views none flips d8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from histocam.data.open import open_source
from histocam.maps.views import VIEWS
from histocam.metrics.pxap import chance_pxap
from histocam.runs import Run
from histocam.runs.evaluation import SplitMetrics
from histocam.train.split_pass import evaluate_split


def scores(method, source, run: Run, class_names: list[str], split: str
           ) -> tuple[float, float, str]:
    """(PxAP, chance, per-class mean image AP / mean FG %) of ``split`` with ``method``'s views."""
    metrics = SplitMetrics(len(class_names), 0.5, torch.device("cpu"))
    evaluate_split(method, source.dataset(split), run.config.data, torch.device("cpu"),
                   metrics.collection(), batch_size=run.config.train.eval_batch_size)
    hist = metrics.histograms.total()
    classes = metrics.per_class(class_names)
    text = "; ".join(f"{name} {c.mean_image_ap:.1f} / {c.mean_fg_fraction:.1f}"
                     for name, c in classes.items())
    return hist.pxap, chance_pxap(hist.fg.cpu().numpy(), hist.bg.cpu().numpy()), text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS))
    parser.add_argument("--checkpoint", default="best-loc")
    parser.add_argument("--splits", nargs="+", default=["valcl", "test"])
    args = parser.parse_args()
    head = " | ".join(f"{s} PxAP (chance) | {s} per class: image AP / FG %" for s in args.splits)
    print(f"| run | views | {head} |")
    print("|---|---|" + "---|---|" * len(args.splits))
    means: dict[tuple[str, str], list[float]] = {}
    for path in args.runs:
        run = Run(path).require_trained()
        method, class_names = run.method(args.checkpoint, "cpu")
        source = open_source(run.config.data)
        for views in args.views:
            method.config = method.config.model_copy(update={"map_tta": views})
            cells = []
            for split in args.splits:
                pxap, chance, classes = scores(method, source, run, class_names, split)
                means.setdefault((views, split), []).append(pxap)
                cells += [f"{pxap:.1f} ({chance:.1f})", classes]
            print(f"| {path.name} | {views} | " + " | ".join(cells) + " |", flush=True)
    if len(args.runs) > 1:
        print(f"\nmean ± std over the {len(args.runs)} runs ({args.checkpoint}):")
        for (views, split), values in means.items():
            print(f"  {views:5s} {split:5s} {statistics.mean(values):.1f} ± "
                  f"{statistics.stdev(values):.1f}")


if __name__ == "__main__":
    main()
