"""A seeded student (PixelCAM, NEGEV) vs its teacher, several seeds: mean ± std of test PxAP and CL
(B-LOC and B-CL).

For each teacher and seed it runs ``histocam pipeline pixelcam`` with the teacher run
``<out_dir>/<teacher>-s<seed>`` (trained by benchmarks/quality/train_teachers.sh; trained here if missing)
and the student config ``benchmarks/configs/pixelcam-<dataset>.yaml`` (or ``--config``, e.g.
``negev-node.yaml``), then aggregates the pipelines' comparisons. Finished pipelines are reused.

Usage:
  bash benchmarks/quality/train_teachers.sh "cam deepmil gradcampp layercam" "colon glas" "0 1 2"
  python benchmarks/quality/pixelcam_vs_teacher.py --dataset colon --teachers cam deepmil gradcampp \
      layercam --seeds 0 1 2 [--set student.method.n=10 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml
from tables import mean_std

from histocam.core.configs import apply_overrides
from histocam.core.experiment_results import PipelineComparison
from histocam.core.rundir import LABEL, SELECTED
from histocam.core.studydirs import PipelineDir
from histocam.experiments.pipeline import PipelineConfig, run_pipeline
from histocam.metrics.separability import DEFINITION


def stored_results(p: PipelineConfig) -> PipelineComparison | None:
    """A finished pipeline's comparison, if it ran with this configuration; None if it has not run.

    A folder of the same name made with another student or teacher is refused rather than
    reported under these settings."""
    folder = PipelineDir(p.root)
    done = PipelineComparison.read(folder.comparison_json)
    if done is None:
        return None
    try:
        stored = PipelineConfig.model_validate(yaml.safe_load(folder.config.read_text()))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{p.root}: finished, but its pipeline config cannot be read against the "
                         f"current configuration ({str(exc).splitlines()[0]}); move it away or "
                         "use another --tag") from None
    keys = ("student", "teacher", "teacher_run", "data", "backbone", "seed")
    if any(getattr(stored, k) != getattr(p, k) for k in keys):
        raise SystemExit(f"{p.root}: finished with other settings than these (see its pipeline "
                         "config); move it away or use another --tag")
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["colon", "node", "glas"], default="colon")
    parser.add_argument("--teachers", nargs="+", default=["cam", "deepmil", "gradcampp",
                                                          "layercam"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tag", default="pix", help="prefix of the pipeline names (ablations)")
    parser.add_argument("--set", nargs="*", default=[], help="pipeline overrides key=value")
    parser.add_argument("--config", type=Path, help="student pipeline config (default: "
                        "benchmarks/configs/pixelcam-<dataset>.yaml)")
    args = parser.parse_args()
    config = args.config or Path(f"benchmarks/configs/pixelcam-{args.dataset}.yaml")
    base = yaml.safe_load(config.read_text())
    rows, label = [], ""
    for teacher in args.teachers:
        per_seed = []
        for seed in args.seeds:
            out_dir = Path(base["out_dir"])
            tree = apply_overrides(json.loads(json.dumps(base)), [
                f"name={args.tag}-{teacher}-s{seed}", f"seed={seed}",
                f"teacher_run={out_dir / f'{teacher}-s{seed}'}", *args.set])
            p = PipelineConfig.model_validate(tree)
            per_seed.append(stored_results(p) or run_pipeline(p))
        rows.append((teacher, per_seed))
        label = per_seed[0].student_method
    print(f"dataset {args.dataset}, seeds {args.seeds}, overrides {args.set or 'none'}\n")
    print(f"| teacher | selection | chance | teacher PxAP | {label} PxAP | Δ PxAP | teacher CL | "
          f"{label} CL | Δ CL |")
    print("|---|---|---|---|---|---|---|---|---|")
    deltas = []
    for teacher, per_seed in rows:
        for ckpt in SELECTED:
            tp = [r.teacher.at(ckpt).pxap for r in per_seed]
            pp = [r.student.at(ckpt).pxap for r in per_seed]
            tc = [r.teacher.at(ckpt).accuracy for r in per_seed]
            pc = [r.student.at(ckpt).accuracy for r in per_seed]
            dp = [b - a for a, b in zip(tp, pp)]
            dc = [b - a for a, b in zip(tc, pc)]
            if ckpt == "best-loc":
                deltas.extend(dp)
            chance = [r.teacher.at(ckpt).chance for r in per_seed]
            print(f"| {teacher} | {LABEL[ckpt]} | {mean_std(chance)} | {mean_std(tp)} | {mean_std(pp)} | "
                  f"{mean_std(dp)} | "
                  f"{mean_std(tc)} | {mean_std(pc)} | {mean_std(dc)} |")
    print("(chance: PxAP of an all-ones map on the same test images)")
    print(f"\nmean Δ PxAP (B-LOC) over teachers and seeds: {mean_std(deltas)}")
    print("\npaired t-tests on per-image AP (B-LOC), per teacher and seed:")
    for teacher, per_seed in rows:
        tests = [r.paired_ttest_pxap_b_loc for r in per_seed]
        print(f"  {teacher}: " + "; ".join(
            f"Δ {t.mean_difference:+.1f} (t {t.t:.2f}, p {t.p:.2g})" for t in tests if t))
    print(f"\nFG/BG separability of the encoder's pixel features on test, mean over images ({DEFINITION}):")
    print(f"| teacher | selection | teacher J | {label} J | {label} higher |")
    print("|---|---|---|---|---|")
    for teacher, per_seed in rows:
        for ckpt in SELECTED:
            tj = [r.teacher.at(ckpt).separability for r in per_seed]
            pj = [r.student.at(ckpt).separability for r in per_seed]
            print(f"| {teacher} | {LABEL[ckpt]} | {mean_std(tj, 3)} | {mean_std(pj, 3)} | "
                  f"{sum(b > a for a, b in zip(tj, pj))}/{len(tj)} |")
    costs = [(r.teacher.cost, r.student.cost) for _, rs in rows for r in rs]
    t_ratio = statistics.mean(c[0].ratio for c in costs)
    p_ratio = statistics.mean(c[1].ratio for c in costs)
    print(f"\ninference (CPU, ms/img, batch 8): {label} forward+map / its forward = {p_ratio:.2f}; "
          f"teacher forward+map / forward = {t_ratio:.2f}")


if __name__ == "__main__":
    main()
