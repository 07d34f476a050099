"""Robustness of a teacher and its PixelCAM, several seeds: stain shift (PixelCAM
Figs. 4/5 and 9/10) and out-of-distribution transfer (PixelCAM Table 3).

For each seed, the pipeline ``<out_dir>/<tag>-<teacher>-s<seed>`` written by
``benchmarks/quality/pixelcam_vs_teacher.py`` holds a teacher run and its student run. For both runs and
both selections (B-LOC, B-CL) this script runs

- ``histocam stain-shift`` (the test images re-stained at 10 increasing strengths along one fixed
  HED direction, ``histocam.experiments.stain_shift``), reusing ``metrics/stain-shift.json`` when it
  was written with the same levels and direction;
- ``histocam evaluate --data OOD`` (the run applied as it is to another dataset's test split),

then prints mean ± std over seeds as markdown tables and draws PxAP and CL against the stain
strength (mean line, ± std band) into ``--figure``.

Usage (synthetic-node, CAM teacher, 3 seeds; about 1 h on 2 CPU cores including training):
  bash benchmarks/quality/train_teachers.sh cam node "0 1 2"
  python benchmarks/quality/pixelcam_vs_teacher.py --dataset node --teachers cam --seeds 0 1 2
  python benchmarks/quality/robustness.py --dataset node --teacher cam --seeds 0 1 2 \
      --ood synthetic-colon --figure benchmarks/figures/robustness-node.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from tables import mean_std

from histocam.core.experiment_results import PipelineComparison, StainShiftResult
from histocam.core.rundir import LABEL, SELECTED, RunDir
from histocam.core.studydirs import PipelineDir
from histocam.experiments.stain_shift import N_LEVELS, StainShift, run_stain_shift
from histocam.runs import Run


def stain_curves(run_dir: str, max_strength: float, seed: int) -> StainShiftResult:
    """A run's stain-shift result, computed unless it is stored with these settings."""
    path = RunDir(run_dir).experiment("stain-shift")
    shift = StainShift.from_seed(seed)
    stored = StainShiftResult.read(path)
    if (stored is not None and stored.a == list(shift.a) and len(stored.levels) == N_LEVELS + 1
            and abs(stored.strengths[-1] - max_strength) < 1e-12
            and set(SELECTED) <= set(stored.checkpoints)):
        return stored
    run_stain_shift(run_dir, checkpoints=SELECTED, max_strength=max_strength, seed=seed)
    return StainShiftResult.read(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["colon", "node", "glas"], default="node")
    parser.add_argument("--teacher", default="cam")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tag", default="pix", help="prefix of the pipeline names")
    parser.add_argument("--ood", nargs="*", default=["synthetic-colon"],
                        help="datasets to evaluate on as they are (registered names or paths)")
    parser.add_argument("--max-strength", type=float, default=0.5)
    parser.add_argument("--shift-seed", type=int, default=0, help="seed of the HED direction")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    out_dir = Path(yaml.safe_load(Path(f"benchmarks/configs/pixelcam-{args.dataset}.yaml")
                                  .read_text())["out_dir"])
    runs: dict[str, list[str]] = {"teacher": [], "student": []}
    for seed in args.seeds:
        folder = PipelineDir(out_dir / f"{args.tag}-{args.teacher}-s{seed}")
        results = PipelineComparison.read(folder.comparison_json)
        if results is None:
            raise SystemExit(f"error: {folder} has no comparison: run "
                             f"benchmarks/quality/pixelcam_vs_teacher.py --dataset {args.dataset} "
                             f"--teachers {args.teacher} first")
        runs["teacher"].append(results.teacher.run)
        runs["student"].append(results.student.run)
    names = {"teacher": f"{args.teacher} teacher", "student": "PixelCAM"}

    curves = {role: [stain_curves(r, args.max_strength, args.shift_seed) for r in dirs]
              for role, dirs in runs.items()}
    strengths = curves["teacher"][0].strengths
    print(f"## Stain shift: {args.dataset}, {args.teacher} teacher vs PixelCAM, seeds {args.seeds}")
    print(f"{curves['teacher'][0].definition}\n")
    for ckpt in SELECTED:
        print(f"| {LABEL[ckpt]} | " + " | ".join(f"{s:g}" for s in strengths) + " |")
        print("|---" * (len(strengths) + 1) + "|")
        for role in ("teacher", "student"):
            for label in ("PxAP", "CL"):
                series = [c.checkpoints[ckpt].pxap if label == "PxAP" else
                          c.checkpoints[ckpt].accuracy for c in curves[role]]
                cells = [mean_std([v[k] for v in series]) for k in range(len(strengths))]
                print(f"| {names[role]} {label} | " + " | ".join(cells) + " |")
        chance = [mean_std([c.checkpoints[ckpt].chance[k] for c in curves["teacher"]])
                  for k in range(len(strengths))]
        print("| chance | " + " | ".join(chance) + " |\n")

    for data in args.ood:
        print(f"## Out of distribution: trained on {args.dataset}, tested on {data} "
              f"(seeds {args.seeds})\n")
        print("| model | selection | own test PxAP | own chance | OOD PxAP | OOD chance | own CL "
              "| OOD CL |")
        print("|---|---|---|---|---|---|---|---|")
        for role, dirs in runs.items():
            for ckpt in SELECTED:
                own = [Run(r).evaluate(ckpt, "test") for r in dirs]
                ood = [Run(r).evaluate(ckpt, "test", data=data) for r in dirs]
                cells = [mean_std(values) for values in (
                    [m.pxap for m in own], [m.localization.chance for m in own],
                    [m.pxap for m in ood], [m.localization.chance for m in ood],
                    [m.accuracy for m in own], [m.accuracy for m in ood])]
                print(f"| {names[role]} | {LABEL[ckpt]} | " + " | ".join(cells) + " |")
        print()

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True)
        for col, ckpt in enumerate(SELECTED):
            for row, (key, label) in enumerate((("pxap", "test PxAP"), ("accuracy", "test CL (%)"))):
                ax = axes[row, col]
                for role, colour in (("teacher", "tab:blue"), ("student", "tab:red")):
                    values = np.array([getattr(c.checkpoints[ckpt], key) for c in curves[role]],
                                      float)
                    mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else 0
                    ax.plot(strengths, mean, color=colour, marker="o", ms=3, label=names[role])
                    ax.fill_between(strengths, np.clip(mean - std, 0, 100),
                                    np.clip(mean + std, 0, 100), color=colour, alpha=0.2)
                if key == "pxap":
                    chance = np.array([c.checkpoints[ckpt].chance for c in curves["teacher"]],
                                      float)
                    ax.plot(strengths, chance.mean(0), "k--", lw=1, label="chance")
                ax.set_title(f"{label}, {LABEL[ckpt]}", fontsize=9)
                ax.grid(alpha=0.3)
                if row == 1:
                    ax.set_xlabel("stain-shift strength")
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"{args.dataset}: {args.teacher} teacher vs PixelCAM under stain shift "
                     f"(mean ± std, seeds {args.seeds})", fontsize=10)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=90)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
