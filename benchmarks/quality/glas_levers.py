"""Levers of the GlaS study: a ``ROOT/levers/<name>`` cross-validation folder (a histocam config
with some settings changed) beside the folder it changes, and the validation criterion a lever is
chosen on (the best valpx PxAP of a run's log, the B-LOC criterion). Used by
``glas_crossval.py``, which prints the table."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tables import mean_std

from histocam.core.experiment_results import CrossvalResult
from histocam.core.rundir import runs_in
from histocam.core.studydirs import CrossvalDir
from histocam.metrics.stats import paired_ttest
from histocam.train.run_config import tree_changes


def criteria(folder: Path) -> dict[str, tuple[float, float]]:
    """Per run of one fold's folder (``model``, or a pipeline's runs by name, the student last): the
    best valpx PxAP (the B-LOC criterion) and the best valcl accuracy (the B-CL one) of its log."""
    out = {}
    for run in runs_in(folder):
        rows = run.read_log()
        px = [float(r["valpx_pxap"]) for r in rows if r.get("valpx_pxap")]
        cl = [float(r["valcl_accuracy"]) for r in rows if r.get("valcl_accuracy")]
        out["model" if run.root == folder else run.name] = (max(px) if px else float("nan"),
                                                            max(cl) if cl else float("nan"))
    return out


NOT_SETTINGS = ("name", "out_dir")


def changes(base: dict[str, Any], lever: dict[str, Any]) -> list[str]:
    """``key: base -> lever`` for each setting in which ``lever``'s config differs from
    ``base``'s; a run's name and output folder are not settings."""
    return tree_changes(base, lever, allowed=NOT_SETTINGS)


def methods_of(study: CrossvalResult) -> Any:
    """A model's method name, or a pipeline's teacher and student."""
    return study.runs[0].methods if study.pipeline else study.config.get("method", {}).get("name")


def base_of(lever: CrossvalResult, studies: dict[str, CrossvalResult]) -> str | None:
    """The folder ``lever`` changes: of those with its methods, the one whose config differs in the
    fewest settings; on a tie a top-level folder before another lever (``levers/<name>``), then the
    first by name; None when no folder has its methods."""
    same = [(len(changes(s.config, lever.config)), "/" in name, name) for name, s in studies.items()
            if s.pipeline == lever.pipeline and methods_of(s) == methods_of(lever)]
    return min(same)[2] if same else None


def lever_table(root: Path, studies: dict[str, CrossvalResult],
                levers: dict[str, CrossvalResult]) -> list[str]:
    lines = ["| lever | changed (base → lever) | base | runs | best valpx PxAP, base → lever | "
             "Δ valpx over folds | test PxAP at B-LOC, base → lever (never used to choose) | "
             "per-image Δ on test, p (n) |", "|---|---|---|---|---|---|---|---|"]
    for name, lever in levers.items():
        # a lever may change another lever (a setting changed on top of a chosen one)
        candidates = {**studies, **{f"levers/{k}": v for k, v in levers.items() if k != name}}
        base = base_of(lever, candidates)
        if base is None:
            lines.append(f"| {name} | no folder with its methods in {root} | | | | | | |")
            continue
        changed = "; ".join(changes(candidates[base].config, lever.config))
        role = "student" if lever.pipeline else "model"
        ran = {(r.fold, r.seed): r for r in candidates[base].runs}
        per_fold: dict[int, list[tuple[float, ...]]] = {}
        base_ap: dict[tuple[int, str], float] = {}
        lever_ap: dict[tuple[int, str], float] = {}
        for run in lever.runs:
            if (run.fold, run.seed) not in ran:
                continue
            other = ran[(run.fold, run.seed)]
            # the criterion of the folder's last run: the model, or a pipeline's student
            mine = list(criteria(CrossvalDir(root / "levers" / name).fold(run.fold, run.seed))
                        .values())[-1][0]
            theirs = list(criteria(CrossvalDir(root / base).fold(run.fold, run.seed))
                          .values())[-1][0]
            per_fold.setdefault(run.fold, []).append(
                (theirs, mine, other.role(role)["best-loc"].pxap, run.role(role)["best-loc"].pxap))
            base_ap.update({(run.seed, i): v
                            for i, v in other.role(role)["best-loc"].per_image_ap.items()})
            lever_ap.update({(run.seed, i): v
                             for i, v in run.role(role)["best-loc"].per_image_ap.items()})
        base_px, lever_px, base_test, lever_test = (
            [statistics.mean(v[i] for v in runs) for runs in per_fold.values()] for i in range(4))
        delta = [b - a for a, b in zip(base_px, lever_px)]
        n = sum(len(runs) for runs in per_fold.values())
        both = sorted(set(base_ap) & set(lever_ap))
        t = paired_ttest([base_ap[k] for k in both], [lever_ap[k] for k in both])
        lines.append(f"| {name} | {changed} | {base} | {n} | {mean_std(base_px)} → "
                     f"{mean_std(lever_px)} | {mean_std(delta)} | {mean_std(base_test)} → "
                     f"{mean_std(lever_test)} | {t.mean_difference:+.1f}, {t.p:.2g} ({t.n}) |")
    return lines
