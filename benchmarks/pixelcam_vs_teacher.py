"""A seeded student (PixelCAM, NEGEV) vs its teacher, several seeds: mean ± std of test PxAP and CL
(B-LOC and B-CL).

For each teacher and seed it runs ``histocam pipeline pixelcam`` with the teacher run
``<out_dir>/<teacher>-s<seed>`` (trained by benchmarks/train_teachers.sh; trained here if missing)
and the student config ``benchmarks/configs/pixelcam-<dataset>.yaml`` (or ``--config``, e.g.
``negev-node.yaml``), then aggregates the
``comparison.json`` files. Finished pipelines are reused.

Usage:
  bash benchmarks/train_teachers.sh "cam deepmil gradcampp layercam" "colon glas" "0 1 2"
  python benchmarks/pixelcam_vs_teacher.py --dataset colon --teachers cam deepmil gradcampp \
      layercam --seeds 0 1 2 [--set student.method.n=10 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from histocam.core.configs import apply_overrides
from histocam.experiments.pipeline import PipelineConfig, run_pipeline
from histocam.metrics.separability import DEFINITION
from histocam.runs import Run


def mean_std(values: list[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def with_separability(results: dict) -> bool:
    """Add the test separability J where a stored comparison lacks it; True if anything changed."""
    changed = False
    for role in ("teacher", "student"):
        for ckpt in ("best-loc", "best-cl"):
            if results[role][ckpt].get("separability") is None:
                m = Run(results[role]["run"]).evaluate(ckpt, "test", separability=True)
                results[role][ckpt]["separability"] = m["separability"]["mean"]
                changed = True
    return changed


def stored_results(p: PipelineConfig) -> dict | None:
    """A finished pipeline's results, if it ran with this configuration; None if it has not run.

    A folder of the same name made with another student or teacher (e.g. before a config's default
    changed) is refused rather than reported under the new settings."""
    done = p.root / "comparison.json"
    if not done.is_file():
        return None
    try:
        stored = PipelineConfig.model_validate(yaml.safe_load((p.root / "pipeline.yaml").read_text()))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{p.root}: finished, but its pipeline.yaml cannot be read against the "
                         f"current configuration ({str(exc).splitlines()[0]}); move it away or "
                         "use another --tag") from None
    keys = ("student", "teacher", "teacher_run", "data", "backbone", "seed")
    if any(getattr(stored, k) != getattr(p, k) for k in keys):
        raise SystemExit(f"{p.root}: finished with other settings than these (see its "
                         "pipeline.yaml); move it away or use another --tag")
    return json.loads(done.read_text())


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
            done = p.root / "comparison.json"
            results = stored_results(p)
            if results is None:
                results = run_pipeline(p)
            if "pixelcam" in results:  # stored before NEGEV shared the pipeline
                results["student"] = results.pop("pixelcam")
                results["student_method"] = "pixelcam"
            if with_separability(results):  # pipelines finished before J was part of them
                done.write_text(json.dumps(results, indent=2))
            per_seed.append(results)
        rows.append((teacher, per_seed))
        label = per_seed[0]["student_method"]
    print(f"dataset {args.dataset}, seeds {args.seeds}, overrides {args.set or 'none'}\n")
    print(f"| teacher | selection | chance | teacher PxAP | {label} PxAP | Δ PxAP | teacher CL | "
          f"{label} CL | Δ CL |")
    print("|---|---|---|---|---|---|---|---|---|")
    deltas = []
    for teacher, per_seed in rows:
        for ckpt in ("best-loc", "best-cl"):
            tp = [r["teacher"][ckpt]["pxap"] for r in per_seed]
            pp = [r["student"][ckpt]["pxap"] for r in per_seed]
            tc = [r["teacher"][ckpt]["accuracy"] for r in per_seed]
            pc = [r["student"][ckpt]["accuracy"] for r in per_seed]
            dp = [b - a for a, b in zip(tp, pp)]
            dc = [b - a for a, b in zip(tc, pc)]
            if ckpt == "best-loc":
                deltas.extend(dp)
            sel = "B-LOC" if ckpt == "best-loc" else "B-CL"
            chance = [r["teacher"][ckpt]["chance"] for r in per_seed if "chance" in r["teacher"][ckpt]]
            print(f"| {teacher} | {sel} | {mean_std(chance)} | {mean_std(tp)} | {mean_std(pp)} | "
                  f"{mean_std(dp)} | "
                  f"{mean_std(tc)} | {mean_std(pc)} | {mean_std(dc)} |")
    print("(chance: PxAP of an all-ones map on the same test images; n/a for runs stored before it)")
    print(f"\nmean Δ PxAP (B-LOC) over teachers and seeds: {mean_std(deltas)}")
    print("\npaired t-tests on per-image AP (B-LOC), per teacher and seed:")
    for teacher, per_seed in rows:
        tests = [r.get("paired_ttest_pxap_b_loc") for r in per_seed]
        print(f"  {teacher}: " + "; ".join(
            f"Δ {t['mean_difference']:+.1f} (t {t['t']:.2f}, p {t['p']:.2g})" for t in tests if t))
    print(f"\nFG/BG separability of the encoder's pixel features on test, mean over images ({DEFINITION}):")
    print(f"| teacher | selection | teacher J | {label} J | {label} higher |")
    print("|---|---|---|---|---|")
    for teacher, per_seed in rows:
        for ckpt in ("best-loc", "best-cl"):
            tj = [r["teacher"][ckpt]["separability"] for r in per_seed]
            pj = [r["student"][ckpt]["separability"] for r in per_seed]
            sel = "B-LOC" if ckpt == "best-loc" else "B-CL"
            print(f"| {teacher} | {sel} | {mean_std(tj, 3)} | {mean_std(pj, 3)} | "
                  f"{sum(b > a for a, b in zip(tj, pj))}/{len(tj)} |")
    costs = [(r["teacher"]["cost"], r["student"]["cost"]) for _, rs in rows for r in rs]
    t_ratio = statistics.mean(c[0]["ratio"] for c in costs)
    p_ratio = statistics.mean(c[1]["ratio"] for c in costs)
    print(f"\ninference (CPU, ms/img, batch 8): {label} forward+map / its forward = {p_ratio:.2f}; "
          f"teacher forward+map / forward = {t_ratio:.2f}")


if __name__ == "__main__":
    main()
