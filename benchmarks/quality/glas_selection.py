"""How a checkpoint choice made on validation images transfers to unseen patients (the GlaS study).

A run trained with ``train.log_valcl_pxap=true train.trace_test_pxap=true`` (in a pipeline,
``student.train.…``) logs after every epoch, beside the valpx PxAP that B-LOC selects on, the PxAP
of every annotated valcl image and of the fold's test split. The trainer never reads either trace
(``docs/protocol.md``, Model selection). For every cross-validation folder of ROOT whose runs hold
both traces, this prints, per selection rule, the test PxAP of the epoch the rule picks:

- **B-LOC**: the best valpx PxAP (3 images per class), the later epoch on ties: the trainer's rule;
- **every annotated valcl image**: the best PxAP over all valcl images (valpx among them), about
  twice as many pixel-labelled images on the GlaS folds;
- **valpx smoothed over 3 epochs**: the best mean valpx PxAP of an epoch and its two neighbours
  (one at the first and the last epoch);
- **B-CL**: the best valcl accuracy; **last**: the last epoch;
- **best test epoch**: the ceiling of any rule, not a rule (it reads the test fold).

Each rule reads validation data only; the test trace is only reported: the PxAP over folds (each
fold the mean of its seeds), the epochs picked, in how many runs the rule's epoch is below or above
B-LOC's on the test fold, and the mean distance to the best test epoch. A last line checks the trace
against the evaluated B-LOC checkpoint of each run.

Usage: python benchmarks/quality/glas_selection.py runs/cv
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

from tables import mean_std

from histocam.core.experiment_results import CrossvalResult
from histocam.core.rundir import RunDir, runs_in
from histocam.core.studydirs import CrossvalDir

Curve = list[float]


def best_epoch(values: Curve) -> int:
    """The index of the largest value, the later one on ties (the trainer's ``>=``)."""
    return max(range(len(values)), key=lambda i: (values[i], i))


def smoothed(values: Curve, window: int = 3) -> Curve:
    """The mean of each value and its neighbours within ``window // 2`` (fewer at the ends)."""
    half = window // 2
    return [statistics.mean(values[max(0, i - half):i + half + 1]) for i in range(len(values))]


def b_loc(c: dict[str, Curve]) -> int:
    """The trainer's B-LOC epoch: the best valpx PxAP."""
    return best_epoch(c["valpx_pxap"])


RULES: dict[str, Callable[[dict[str, Curve]], int]] = {
    "B-LOC (valpx, the trainer's rule)": b_loc,
    "every annotated valcl image": lambda c: best_epoch(c["valcl_pxap"]),
    "valpx smoothed over 3 epochs": lambda c: best_epoch(smoothed(c["valpx_pxap"])),
    "B-CL (valcl accuracy)": lambda c: best_epoch(c["valcl_accuracy"]),
    "last epoch": lambda c: len(c["valpx_pxap"]) - 1,
    "best test epoch (ceiling, not a rule)": lambda c: best_epoch(c["test_pxap_trace"]),
}
COLUMNS = ("valpx_pxap", "valcl_pxap", "valcl_accuracy", "test_pxap_trace")


def curves(run: RunDir) -> dict[str, Curve] | None:
    """The log's curves by column, epochs in order; None unless every epoch holds both traces."""
    rows = sorted(run.read_log(), key=lambda r: int(r["epoch"]))
    if not rows or not all(r.get(key) for r in rows for key in COLUMNS):
        return None
    return {key: [float(r[key]) for r in rows] for key in COLUMNS}


def traced_runs(folder: Path, summary: CrossvalResult) -> dict[tuple[int, int], dict[str, Curve]]:
    """Per (fold, seed) of a crossval folder: the curves of its traced run (a model, or the one
    traced run of a pipeline, its student)."""
    found = {}
    for run in summary.runs:
        for inner in runs_in(CrossvalDir(folder).fold(run.fold, run.seed)):
            traced = curves(inner)
            if traced is not None:
                found[(run.fold, run.seed)] = traced
    return found


def rule_table(traced: dict[tuple[int, int], dict[str, Curve]]) -> list[str]:
    lines = ["| rule | test PxAP over folds | epochs picked | runs below / above B-LOC on test | "
             "Δ test vs B-LOC | below the best test epoch |", "|---|---|---|---|---|---|"]
    keys = sorted(traced)
    folds = sorted({fold for fold, _ in keys})
    base = {k: traced[k]["test_pxap_trace"][b_loc(traced[k])] for k in keys}
    ceiling = {k: max(traced[k]["test_pxap_trace"]) for k in keys}
    for rule, pick in RULES.items():
        epochs = {k: pick(traced[k]) for k in keys}
        test = {k: traced[k]["test_pxap_trace"][epochs[k]] for k in keys}
        per_fold = [statistics.mean(test[k] for k in keys if k[0] == f) for f in folds]
        below = sum(test[k] < base[k] for k in keys)
        above = sum(test[k] > base[k] for k in keys)
        delta = statistics.mean(test[k] - base[k] for k in keys)
        regret = statistics.mean(ceiling[k] - test[k] for k in keys)
        lines.append(f"| {rule} | {mean_std(per_fold)} | {', '.join(str(epochs[k]) for k in keys)} "
                     f"| {below} / {above} of {len(keys)} | {delta:+.1f} | {regret:.1f} |")
    return lines


def trace_check(summary: CrossvalResult, traced: dict[tuple[int, int], dict[str, Curve]]) -> str:
    """The largest gap between the test trace at B-LOC's epoch and the evaluated B-LOC
    checkpoint's test PxAP, over the runs (the same maps, so it should be rounding only)."""
    role = summary.roles[-1]
    gaps = [abs(c["test_pxap_trace"][b_loc(c)] - r.role(role)["best-loc"].pxap)
            for r in summary.runs if (c := traced.get((r.fold, r.seed))) is not None]
    return (f"Trace check: the test trace at B-LOC's epoch against the evaluated B-LOC checkpoint "
            f"({role}), largest gap {max(gaps):.2f} PxAP over {len(gaps)} runs.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    folders = sorted(p.parent for p in args.root.rglob(CrossvalDir(".").summary_json.name))
    for folder in folders:
        summary = CrossvalResult.read(CrossvalDir(folder).summary_json)
        traced = traced_runs(folder, summary) if summary else {}
        if not traced:
            continue
        seeds = sorted({s for _, s in traced})
        print(f"\n{folder.relative_to(args.root)}: {len(traced)} traced runs (folds "
              f"{', '.join(str(f) for f in sorted({f for f, _ in traced}))}; seeds "
              f"{', '.join(map(str, seeds))}); epochs picked per run in fold, seed order.\n")
        print("\n".join(rule_table(traced)))
        print(f"\n{trace_check(summary, traced)}")


if __name__ == "__main__":
    main()
