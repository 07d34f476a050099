"""Test metrics of teacher/baseline runs, mean ± std over seeds, with chance and per class.

Evaluates each run's B-LOC and B-CL checkpoints on its held-out test split (τ* from valpx; reuses
the stored evaluation when present) and prints one markdown row per method: test PxAP next
to its chance level (all-ones map), CL, and per class the mean per-image AP next to the mean
foreground fraction (a map at chance scores its image's foreground fraction), and the Max-Min
paper's F1⁺ / F1⁻ (its eqs. 14–15: foreground and background Dice, pooled over the test pixels) at
τ* chosen on valpx.

Usage (GlaS protocol, benchmarks/configs/glas.yaml):
  bash benchmarks/quality/train_teachers.sh "cam deepmil gradcampp layercam" glas "0 1 2"
  python benchmarks/quality/teacher_table.py runs/exp/glas --methods cam deepmil gradcampp layercam
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tables import mean_std

from histocam.core.results import EvaluationResult
from histocam.core.rundir import LABEL, SELECTED, RunDir


def metrics_of(run: RunDir, ckpt: str) -> EvaluationResult:
    saved = run.read_evaluation(ckpt, "test")
    if saved is not None:
        return saved
    from histocam.runs import Run

    return Run(run).evaluate(ckpt, "test")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path, help="folder holding <method>-s<seed> runs")
    parser.add_argument("--methods", nargs="+", default=["cam", "deepmil", "gradcampp", "layercam"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--prefix", default="", help="run-name prefix (e.g. an ablation tag)")
    args = parser.parse_args()
    print("| method | selection | seeds | test PxAP | chance | CL | F1⁺ / F1⁻ at τ* | per class: "
          "mean image AP / mean FG % |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        runs = [RunDir(args.out_dir / f"{args.prefix}{method}-s{s}") for s in args.seeds]
        # a run copied without its checkpoints (trained on another machine) is read from its
        # stored evaluation
        runs = [r for r in runs if r.has_checkpoint("best-loc")
                or r.evaluation("best-loc").json.is_file()]
        if not runs:
            continue
        for ckpt in SELECTED:
            ms = [metrics_of(r, ckpt) for r in runs]
            loc = [m.localization for m in ms]
            classes = []
            for name in loc[0].per_class or {}:
                ap = [x.per_class[name].mean_image_ap for x in loc]
                fg = [x.per_class[name].mean_fg_fraction for x in loc]
                classes.append(f"{name} {mean_std(ap)} / {statistics.mean(fg):.1f}")
            per_seed = ", ".join(f"{x.pxap:.1f}" for x in loc)
            print(f"| {method} | {LABEL[ckpt]} | {len(runs)} ({per_seed}) | "
                  f"{mean_std([x.pxap for x in loc])} | "
                  f"{statistics.mean(x.chance for x in loc):.1f} | "
                  f"{mean_std([m.accuracy for m in ms])} | "
                  f"{mean_std([x.at_tau_star_valpx.dice_fg for x in loc])} / "
                  f"{mean_std([x.at_tau_star_valpx.dice_bg for x in loc])} | "
                  f"{'; '.join(classes)} |")


if __name__ == "__main__":
    main()
