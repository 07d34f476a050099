"""Group-disjoint cross-validation: one config over every fold and seed, mean ± std over folds.

``histocam crossval CONFIG --folds 3 --seeds 0 1 2`` takes a run config (one method) or a pipeline
config (teacher -> seeded student) and runs it once per fold and seed with ``data.folds`` /
``data.fold`` (docs/protocol.md, "Data and splits": test = one fold's patients, valcl = other
patients, valpx from valcl, train = the rest; every choice made on valcl/valpx). Each fold and
seed is one folder of the cross-validation's ``CrossvalDir`` under ``<out_dir>/<name>``; finished
runs and evaluations are reused, unfinished ones resumed, so an interrupted cross-validation
continues where it stopped.

Each fold's test split also gets its ``chance`` (an all-ones map) and its colour floor (the
darkness map, ``histocam.maps.colour``), so every PxAP is read next to both. The summary, a
``CrossvalResult`` written as JSON and as a markdown table, gives per checkpoint the PxAP per fold
(mean over seeds), the mean ± std over folds and over all runs, per class, and, for a pipeline,
the student − teacher differences with paired t-tests over the per-image AP of every image (each
image is in exactly one fold's test split, so one seed's folds pair all of them).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from histocam.core.atomic import write_text_atomic
from histocam.core.configs import apply_overrides
from histocam.core.experiment_results import (
    ClassSummary,
    CrossvalResult,
    FoldCheckpoint,
    FoldFloor,
    FoldMeanMap,
    FoldRun,
    PipelineComparison,
    PipelineMethods,
)
from histocam.core.results import EvaluationResult
from histocam.core.rundir import LABEL, SELECTED
from histocam.core.studydirs import CrossvalDir, PipelineDir
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.experiments.pipeline import PipelineConfig, run_pipeline
from histocam.maps.colour import COLOUR_FLOOR, colour_map_pxap
from histocam.runs.ensemble import ensemble_evaluation
from histocam.runs.run import Run
from histocam.train.run_config import RunConfig


def is_pipeline(tree: dict) -> bool:
    """A pipeline config has teacher/student stages; a run config has a method."""
    return any(key in tree for key in ("student", "teacher", "teacher_run"))


def crossval_dir(tree: dict) -> CrossvalDir:
    """Where the cross-validation of ``tree`` goes: ``<out_dir>/<name>``."""
    return CrossvalDir(Path(tree.get("out_dir", "runs")) / tree.get("name", "crossval"))


def fold_tree(tree: dict, fold: int, folds: int, seed: int,
              teacher_runs: Path | str | None) -> dict:
    """The config of one fold and seed: the base config with its own name, folder, seed and fold."""
    where = crossval_dir(tree).fold(fold, seed)
    overrides = [f"name={where.name}", f"out_dir={where.parent}", f"seed={seed}",
                 f"data.folds={folds}", f"data.fold={fold}"]
    if teacher_runs is not None:
        overrides.append(f"teacher_run={teacher_run_of(teacher_runs, fold, seed)}")
    return apply_overrides(json.loads(json.dumps(tree)), overrides)


def teacher_run_of(teacher_runs: Path | str, fold: int, seed: int) -> Path:
    """The teacher run of one fold and seed: ``teacher_runs`` with ``{fold}`` and ``{seed}``
    filled in (e.g. a student of an earlier round, ``runs/cv/pix/fold{fold}-s{seed}/pixelcam-cam``),
    or, without placeholders, the crossval folder's own run of that fold and seed."""
    text = str(teacher_runs)
    if "{fold}" in text or "{seed}" in text:
        return Path(text.format(fold=fold, seed=seed))
    return CrossvalDir(text).fold(fold, seed)


def _per_class(result: EvaluationResult) -> dict[str, ClassSummary]:
    per_class = (result.localization.per_class or {}) if result.localization is not None else {}
    return {name: ClassSummary(pxap=c.pxap, chance=c.chance, mean_image_ap=c.mean_image_ap,
                               mean_fg_fraction=c.mean_fg_fraction)
            for name, c in per_class.items()}


def fold_checkpoint(result: EvaluationResult) -> FoldCheckpoint:
    """What the summary keeps of an evaluation on a fold's test split."""
    loc = result.localization
    return FoldCheckpoint(pxap=result.pxap, chance=loc.chance if loc is not None else None,
                          accuracy=result.accuracy, per_class=_per_class(result),
                          per_image_ap=result.image_ap())


def evaluated(run: Run, checkpoint: str) -> FoldCheckpoint:
    """A checkpoint on the fold's test split (its evaluation reused when newer than the
    checkpoint) with its per-image AP."""
    return fold_checkpoint(run.evaluation(checkpoint, "test"))


def _train_run(tree: dict) -> dict[str, Any]:
    """Train one fold's run (resumed if it stopped early, reused if finished; ``Run.train``) and
    evaluate its B-LOC, B-CL and last checkpoints on the fold's test split."""
    run = Run.train(RunConfig.model_validate(tree))
    return {"model": {c: evaluated(run, c) for c in (*SELECTED, "last")},
            "dirs": {"model": str(run.dir)}}


def _pipeline_run(tree: dict) -> dict[str, Any]:
    """Run one fold's pipeline (its finished comparison reused when made with this config, but
    for settings that do not change the weights: ``PipelineConfig.changes_from``) and collect the
    teacher's and the student's test results."""
    p = PipelineConfig.model_validate(tree)
    folder = PipelineDir(p.root)
    results = PipelineComparison.read(folder.comparison_json)
    if results is None or not folder.config.is_file() or p.changes_from(
            PipelineConfig.model_validate(yaml.safe_load(folder.config.read_text()))):
        results = run_pipeline(p, progress=False)
    out: dict[str, Any] = {"dirs": {}}
    for role in ("teacher", "student"):
        summary = getattr(results, role)
        run = Run(summary.run)
        out["dirs"][role] = str(run.dir)
        out[role] = {c: FoldCheckpoint(
            pxap=summary.at(c).pxap, chance=summary.at(c).chance, accuracy=summary.at(c).accuracy,
            per_class=_per_class(run.dir.read_evaluation(c)),
            per_image_ap=summary.at(c).per_image_ap) for c in SELECTED}
    out["methods"] = PipelineMethods(teacher=results.teacher_method,
                                     student=results.student_method)
    return out


def floors(tree: dict, folds: int) -> dict[int, FoldFloor]:
    """chance and the colour floor on each fold's test split, at the config's evaluation size."""
    out = {}
    for fold in range(folds):
        data = DataConfig.model_validate(fold_tree(tree, fold, folds, 0, None).get("data", {}))
        found = colour_map_pxap(open_source(data).dataset("test"), data, (COLOUR_FLOOR,))
        out[fold] = FoldFloor(chance=found["chance"], darkness=found[COLOUR_FLOOR])
    return out


def mean_maps(runs: list[FoldRun], folds: int, seeds: list[int], roles: list[str],
              folder: CrossvalDir, say: Callable[[str], None]) -> list[FoldMeanMap]:
    """Each fold's mean map of its seeds' runs of each role at B-LOC on the fold's test split
    (``histocam.runs.ensemble``; reused when evaluated after the runs' checkpoints). A role whose
    seeds share one run (a teacher given for every seed) has no mean map."""
    out = []
    for role in roles:
        dirs = {f: [r.dirs[role] for r in runs if r.fold == f] for f in range(folds)}
        if any(len({str(Path(d).resolve()) for d in found}) < 2 for found in dirs.values()):
            say(f"no mean map of the {role}: a fold's seeds share one {role} run")
            continue
        for fold in range(folds):
            members = [Run(d) for d in dirs[fold]]
            where = folder.mean_map(fold, seeds, role)
            say(f"mean map of fold {fold}'s {len(members)} {role} runs: {where}")
            result = ensemble_evaluation(members, "best-loc", "test", where)
            out.append(FoldMeanMap(fold=fold, role=role, result=fold_checkpoint(result)))
    return out


def run_crossval(tree: dict, folds: int, seeds: list[int], teacher_runs: Path | str | None = None,
                 say: Callable[[str], None] = print, mean_map: bool = False) -> CrossvalResult:
    """Train and evaluate every fold × seed of ``tree`` (a run or pipeline config as a dict);
    returns the summary and writes it, as JSON and as a table, beside the runs. ``mean_map``:
    also each fold's mean map of its seeds' runs (two or more seeds)."""
    pipeline = is_pipeline(tree)
    if teacher_runs is not None and not pipeline:
        raise ValueError("--teacher-runs is for a pipeline config (teacher -> student)")
    if mean_map and len(seeds) < 2:
        raise ValueError("--mean-map averages the maps of a fold's seeds: give two or more seeds")
    folder = crossval_dir(tree)
    jobs = [(fold, seed) for fold in range(folds) for seed in seeds]
    runs = []
    for k, (fold, seed) in enumerate(jobs, start=1):
        say(f"[{k}/{len(jobs)}] fold {fold}, seed {seed}: {folder.fold(fold, seed)}")
        one = fold_tree(tree, fold, folds, seed, teacher_runs)
        result = _pipeline_run(one) if pipeline else _train_run(one)
        runs.append(FoldRun(fold=fold, seed=seed, **result))
    say("colour floor of each fold's test split")
    summary = CrossvalResult(config=tree, folds=folds, seeds=seeds, pipeline=pipeline,
                             floors=floors(tree, folds), runs=runs)
    write_summary(summary, folder)  # kept, should a mean map fail
    if mean_map:
        summary = summary.model_copy(update={"mean_maps": mean_maps(
            runs, folds, seeds, summary.roles, folder, say)})
        write_summary(summary, folder)
    return summary


def write_summary(summary: CrossvalResult, folder: CrossvalDir) -> None:
    summary.write(folder.summary_json)
    write_text_atomic(folder.summary_md, crossval_table(summary) + "\n")


def mean_std(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def crossval_table(summary: CrossvalResult) -> str:
    """Markdown: per role and checkpoint the PxAP per fold, over folds and over runs, with chance,
    colour floor and CL; per class; for a pipeline the paired student − teacher tests."""
    from histocam.metrics.stats import paired_ttest

    folds, runs, fl = summary.folds, summary.runs, summary.floors
    chance = statistics.mean(fl[f].chance for f in range(folds))
    floor = statistics.mean(fl[f].darkness for f in range(folds))
    methods = runs[0].methods
    names = {"teacher": methods.teacher, "student": methods.student} if methods else {}
    lines = [f"{folds} folds × seeds {summary.seeds} (n = {len(runs)} runs); test PxAP per "
             f"fold is the mean over seeds. Per fold: chance "
             + ", ".join(f"{fl[f].chance:.1f}" for f in range(folds))
             + f"; colour floor ({COLOUR_FLOOR} map) "
             + ", ".join(f"{fl[f].darkness:.1f}" for f in range(folds)) + ".", "",
             "| model | selection | PxAP over folds | per fold | over runs (n) | chance | colour "
             "floor | CL over folds |", "|---|---|---|---|---|---|---|---|"]
    for role in summary.roles:
        for ckpt in [c for c in (*SELECTED, "last") if c in runs[0].role(role)]:
            px = summary.fold_means(role, ckpt)
            cl = summary.fold_means(role, ckpt, "accuracy")
            every = [r.role(role)[ckpt].pxap for r in runs]
            lines.append(f"| {names.get(role, role)} | {LABEL[ckpt]} | {mean_std(px)} | "
                         + ", ".join(f"{v:.1f}" for v in px)
                         + f" | {mean_std(every)} ({len(every)}) | {chance:.1f} | {floor:.1f} | "
                         f"{mean_std(cl)} |")
    lines += ["", "Per class (mean over folds): PxAP / chance, and mean per-image AP / mean "
              "foreground %.", "", "| model | selection | class | PxAP | chance | image AP | "
              "foreground % |", "|---|---|---|---|---|---|---|"]
    for role in summary.roles:
        for ckpt in SELECTED:
            for cls in runs[0].role(role)[ckpt].per_class:
                cell = {k: summary.class_means(role, ckpt, cls, k)
                        for k in ("pxap", "chance", "mean_image_ap", "mean_fg_fraction")}
                lines.append(f"| {names.get(role, role)} | {LABEL[ckpt]} | {cls} | "
                             f"{mean_std(cell['pxap'])} | {statistics.mean(cell['chance']):.1f} | "
                             f"{mean_std(cell['mean_image_ap'])} | "
                             f"{statistics.mean(cell['mean_fg_fraction']):.1f} |")
    if summary.pipeline:
        lines += ["", "Student − teacher, B-LOC: test PxAP per run, and per-image AP paired over "
                  "every image of the folds (one test per seed: each image is in one fold's test).",
                  "", "| seed | Δ PxAP per fold | per-image Δ (mean) | t | p | n |",
                  "|---|---|---|---|---|---|"]
        for seed in summary.seeds:
            mine = sorted((r for r in runs if r.seed == seed), key=lambda r: r.fold)
            deltas = [r.student["best-loc"].pxap - r.teacher["best-loc"].pxap for r in mine]
            a = {i: v for r in mine for i, v in r.teacher["best-loc"].per_image_ap.items()}
            b = {i: v for r in mine for i, v in r.student["best-loc"].per_image_ap.items()}
            shared = sorted(set(a) & set(b))
            test = paired_ttest([a[i] for i in shared], [b[i] for i in shared])
            lines.append(f"| {seed} | " + ", ".join(f"{d:+.1f}" for d in deltas)
                         + f" | {test.mean_difference:+.2f} | {test.t:.2f} | "
                         f"{test.p:.2g} | {test.n} |")
        lines.append("\nt: two-sided paired Student t-test of student − teacher per-image AP.")
    if summary.mean_maps:
        lines += ["", mean_map_table(summary, names)]
    return "\n".join(lines)


def mean_map_table(summary: CrossvalResult, names: dict[str, str]) -> str:
    """Markdown: each role's mean map of a fold's seeds (one map per fold, so n = folds) with
    chance and the colour floor, and its per-image AP paired against each seed's run alone; for
    a pipeline, the students' mean map against the teachers'."""
    from histocam.metrics.stats import paired_ttest

    folds, fl = summary.folds, summary.floors
    chance = statistics.mean(fl[f].chance for f in range(folds))
    floor = statistics.mean(fl[f].darkness for f in range(folds))

    def images(role: str, seed: int | None = None) -> dict[str, float]:
        """Per-image AP over every fold: of the mean map, or of one seed's runs."""
        if seed is None:
            return {i: v for m in summary.mean_maps if m.role == role
                    for i, v in m.result.per_image_ap.items()}
        return {i: v for r in summary.runs if r.seed == seed
                for i, v in r.role(role)["best-loc"].per_image_ap.items()}

    def test(a: dict[str, float], b: dict[str, float]) -> str:
        """b − a per image."""
        shared = sorted(set(a) & set(b))
        t = paired_ttest([a[i] for i in shared], [b[i] for i in shared])
        return f"{t.mean_difference:+.1f}, {t.p:.2g} ({t.n})"

    lines = [f"Mean map of each fold's {len(summary.seeds)} seeds' runs at B-LOC (`histocam "
             "ensemble`; one map per fold, so the ± is over folds), and its per-image AP against "
             "each seed's run alone (paired t-test over every image of the folds).", "",
             "| model | PxAP over folds | per fold | chance | colour floor | PxAP − floor | CL "
             "over folds | per seed: per-image Δ vs the run alone, p (n) |",
             "|---|---|---|---|---|---|---|---|"]
    averaged = [role for role in summary.roles if any(m.role == role for m in summary.mean_maps)]
    for role in averaged:
        mine = sorted((m for m in summary.mean_maps if m.role == role), key=lambda m: m.fold)
        px = [m.result.pxap for m in mine]
        cl = [m.result.accuracy for m in mine]
        lines.append(f"| {names.get(role, role)} | {mean_std(px)} | "
                     + ", ".join(f"{v:.1f}" for v in px)
                     + f" | {chance:.1f} | {floor:.1f} | {statistics.mean(px) - floor:+.1f} | "
                     f"{mean_std(cl)} | "
                     + "; ".join(test(images(role, s), images(role)) for s in summary.seeds)
                     + " |")
    if averaged == ["teacher", "student"]:
        lines.append("\nStudent − teacher, mean maps: per-image Δ, p (n) = "
                     + test(images("teacher"), images("student")) + ".")
    return "\n".join(lines)
