"""Group-disjoint cross-validation: one config over every fold and seed, mean ± std over folds.

``histocam crossval CONFIG --folds 3 --seeds 0 1 2`` takes a run config (one method) or a pipeline
config (teacher -> seeded student) and runs it once per fold and seed with ``data.folds`` /
``data.fold`` (docs/protocol.md, "Data and splits": test = one fold's patients, valcl = other
patients, valpx from valcl, train = the rest; every choice made on valcl/valpx). Runs go to
``<out_dir>/<name>/fold<f>-s<seed>``; finished runs and evaluations are reused, unfinished ones
resumed, so an interrupted cross-validation continues where it stopped.

Each fold's test split also gets its ``chance`` (an all-ones map) and its colour floor (the
darkness map, ``histocam.maps.colour``), so every PxAP is read next to both. The summary,
``crossval.json`` and ``crossval.md`` in ``<out_dir>/<name>``, gives per checkpoint the PxAP per
fold (mean over seeds), the mean ± std over folds and over all runs, per class, and, for a
pipeline, the student − teacher differences with paired t-tests over the per-image AP of every
image (each image is in exactly one fold's test split, so one seed's folds pair all of them).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from histocam.core.configs import apply_overrides
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.experiments.pipeline import PipelineConfig, run_pipeline
from histocam.maps.colour import COLOUR_FLOOR, colour_map_pxap
from histocam.runs.run import Run
from histocam.train.run_config import RunConfig
from histocam.train.trainer import Trainer

CHECKPOINTS = ("best-loc", "best-cl")
LABELS = {"best-loc": "B-LOC", "best-cl": "B-CL", "last": "last"}


def is_pipeline(tree: dict) -> bool:
    """A pipeline config has teacher/student stages; a run config has a method."""
    return any(key in tree for key in ("student", "teacher", "teacher_run"))


def fold_tree(tree: dict, fold: int, folds: int, seed: int,
              teacher_runs: Path | str | None) -> dict:
    """The config of one fold and seed: the base config with its own name, folder, seed and fold."""
    root = Path(tree.get("out_dir", "runs")) / tree.get("name", "crossval")
    overrides = [f"name=fold{fold}-s{seed}", f"out_dir={root}", f"seed={seed}",
                 f"data.folds={folds}", f"data.fold={fold}"]
    if teacher_runs is not None:
        overrides.append(f"teacher_run={teacher_run_of(teacher_runs, fold, seed)}")
    return apply_overrides(json.loads(json.dumps(tree)), overrides)


def teacher_run_of(teacher_runs: Path | str, fold: int, seed: int) -> Path:
    """The teacher run of one fold and seed: ``teacher_runs`` with ``{fold}`` and ``{seed}``
    filled in (e.g. a student of an earlier round, ``runs/cv/pix/fold{fold}-s{seed}/pixelcam-cam``),
    or, without placeholders, the crossval folder's own run ``teacher_runs/fold<f>-s<seed>``."""
    text = str(teacher_runs)
    if "{fold}" in text or "{seed}" in text:
        return Path(text.format(fold=fold, seed=seed))
    return Path(text) / f"fold{fold}-s{seed}"


def _per_image_ap(run: Run, checkpoint: str) -> dict[str, float]:
    path = run.dir / "metrics" / f"{checkpoint}-test-per-image.csv"
    with path.open() as fh:
        return {r["id"]: float(r["ap"]) for r in csv.DictReader(fh) if r["ap"] not in ("", "nan")}


def _summary(metrics: dict) -> dict[str, Any]:
    loc = metrics.get("localization", {})
    return {"pxap": loc.get("pxap"), "chance": loc.get("chance"),
            "accuracy": metrics["classification"]["accuracy"],
            "per_class": {name: {k: c[k] for k in ("pxap", "chance", "mean_image_ap",
                                                    "mean_fg_fraction")}
                          for name, c in loc.get("per_class", {}).items()}}


def evaluated(run: Run, checkpoint: str) -> dict[str, Any]:
    """A checkpoint's test metrics (reused when written after the checkpoint) and per-image AP."""
    path = run.dir / "metrics" / f"{checkpoint}-test.json"
    ckpt = run.checkpoint_path(checkpoint)
    if path.is_file() and path.stat().st_mtime >= ckpt.stat().st_mtime:
        metrics = json.loads(path.read_text())
    else:
        metrics = run.evaluate(checkpoint, "test")
    return {**_summary(metrics), "per_image_ap": _per_image_ap(run, checkpoint)}


def _train_run(tree: dict) -> dict[str, dict]:
    """Train one fold's run (resumed if it stopped early, reused if finished) and evaluate its
    B-LOC, B-CL and last checkpoints on the fold's test split."""
    config = RunConfig.model_validate(tree)
    if not (config.run_dir / "checkpoints" / "last.pt").is_file():
        Trainer(config).fit()
    else:
        stored = Run(config.run_dir).config
        if ((stored.data, stored.seed, stored.train, stored.method.name)
                != (config.data, config.seed, config.train, config.method.name)):
            raise ValueError(f"{config.run_dir}: trained with another configuration than this one "
                             "(see its config.yaml); move it away or choose another name")
        if _last_epoch(config.run_dir) < config.train.epochs:
            Trainer(config).fit(resume=True)
    run = Run(config.run_dir)
    return {"model": {c: evaluated(run, c) for c in (*CHECKPOINTS, "last")}}


def _last_epoch(run_dir: Path) -> int:
    with (run_dir / "log.csv").open() as fh:
        return max((int(r["epoch"]) for r in csv.DictReader(fh)), default=-1)


def _pipeline_run(tree: dict) -> dict[str, dict]:
    """Run one fold's pipeline (its finished comparison reused when made with this config) and
    collect the teacher's and the student's test results."""
    p = PipelineConfig.model_validate(tree)
    done, made_with = p.root / "comparison.json", p.root / "pipeline.yaml"
    if done.is_file() and made_with.is_file() and PipelineConfig.model_validate(
            yaml.safe_load(made_with.read_text())) == p:
        results = json.loads(done.read_text())
    else:
        results = run_pipeline(p, progress=False)
    out: dict[str, Any] = {}
    for role in ("teacher", "student"):
        run_dir = Path(results[role]["run"])
        out[role] = {c: {**{k: results[role][c][k] for k in ("pxap", "chance", "accuracy")},
                         "per_class": _summary(json.loads(
                             (run_dir / "metrics" / f"{c}-test.json").read_text()))["per_class"],
                         "per_image_ap": results[role][c]["per_image_ap"]}
                     for c in CHECKPOINTS}
    out["methods"] = {"teacher": results["teacher_method"], "student": results["student_method"]}
    return out


def floors(tree: dict, folds: int) -> dict[int, dict[str, float]]:
    """chance and the colour floor on each fold's test split, at the config's evaluation size."""
    out = {}
    for fold in range(folds):
        data = DataConfig.model_validate(fold_tree(tree, fold, folds, 0, None).get("data", {}))
        out[fold] = colour_map_pxap(open_source(data).dataset("test"), data)
    return out


def run_crossval(tree: dict, folds: int, seeds: list[int], teacher_runs: Path | str | None = None,
                 say: Callable[[str], None] = print) -> dict:
    """Train and evaluate every fold × seed of ``tree`` (a run or pipeline config as a dict);
    returns the summary and writes ``crossval.json`` and ``crossval.md`` beside the runs."""
    pipeline = is_pipeline(tree)
    if teacher_runs is not None and not pipeline:
        raise ValueError("--teacher-runs is for a pipeline config (teacher -> student)")
    root = Path(tree.get("out_dir", "runs")) / tree.get("name", "crossval")
    jobs = [(fold, seed) for fold in range(folds) for seed in seeds]
    runs = []
    for k, (fold, seed) in enumerate(jobs, start=1):
        say(f"[{k}/{len(jobs)}] fold {fold}, seed {seed}: {root / f'fold{fold}-s{seed}'}")
        one = fold_tree(tree, fold, folds, seed, teacher_runs)
        result = _pipeline_run(one) if pipeline else _train_run(one)
        runs.append({"fold": fold, "seed": seed, **result})
    say("colour floor of each fold's test split")
    summary = {"config": tree, "folds": folds, "seeds": seeds, "pipeline": pipeline,
               "floors": floors(tree, folds), "runs": runs}
    root.mkdir(parents=True, exist_ok=True)
    (root / "crossval.json").write_text(json.dumps(summary, indent=2))
    table = crossval_table(summary)
    (root / "crossval.md").write_text(table + "\n")
    return summary


def mean_std(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _fold_means(runs: list[dict], folds: int, *path: str) -> list[float]:
    """Per fold, the mean over its runs (seeds) of the value at ``path`` in each run's results."""
    def value(run: dict) -> float:
        for key in path:
            run = run[key]
        return float(run)

    return [statistics.mean(value(r) for r in runs if r["fold"] == f) for f in range(folds)]


def crossval_table(summary: dict) -> str:
    """Markdown: per role and checkpoint the PxAP per fold, over folds and over runs, with chance,
    colour floor and CL; per class; for a pipeline the paired student − teacher tests."""
    from histocam.metrics.stats import paired_ttest

    folds, runs = summary["folds"], summary["runs"]
    fl = {int(k): v for k, v in summary["floors"].items()}
    chance = statistics.mean(fl[f]["chance"] for f in range(folds))
    floor = statistics.mean(fl[f][COLOUR_FLOOR] for f in range(folds))
    roles = ["teacher", "student"] if summary["pipeline"] else ["model"]
    names = runs[0].get("methods", {}) if summary["pipeline"] else {}
    lines = [f"{folds} folds × seeds {summary['seeds']} (n = {len(runs)} runs); test PxAP per "
             f"fold is the mean over seeds. Per fold: chance "
             + ", ".join(f"{fl[f]['chance']:.1f}" for f in range(folds))
             + f"; colour floor ({COLOUR_FLOOR} map) "
             + ", ".join(f"{fl[f][COLOUR_FLOOR]:.1f}" for f in range(folds)) + ".", "",
             "| model | selection | PxAP over folds | per fold | over runs (n) | chance | colour "
             "floor | CL over folds |", "|---|---|---|---|---|---|---|---|"]
    for role in roles:
        for ckpt in [c for c in (*CHECKPOINTS, "last") if c in runs[0][role]]:
            px = _fold_means(runs, folds, role, ckpt, "pxap")
            cl = _fold_means(runs, folds, role, ckpt, "accuracy")
            every = [r[role][ckpt]["pxap"] for r in runs]
            lines.append(f"| {names.get(role, role)} | {LABELS[ckpt]} | {mean_std(px)} | "
                         + ", ".join(f"{v:.1f}" for v in px)
                         + f" | {mean_std(every)} ({len(every)}) | {chance:.1f} | {floor:.1f} | "
                         f"{mean_std(cl)} |")
    lines += ["", "Per class (mean over folds): PxAP / chance, and mean per-image AP / mean "
              "foreground %.", "", "| model | selection | class | PxAP | chance | image AP | "
              "foreground % |", "|---|---|---|---|---|---|---|"]
    for role in roles:
        for ckpt in CHECKPOINTS:
            for cls in runs[0][role][ckpt]["per_class"]:
                cell = {k: _fold_means(runs, folds, role, ckpt, "per_class", cls, k)
                        for k in ("pxap", "chance", "mean_image_ap", "mean_fg_fraction")}
                lines.append(f"| {names.get(role, role)} | {LABELS[ckpt]} | {cls} | "
                             f"{mean_std(cell['pxap'])} | {statistics.mean(cell['chance']):.1f} | "
                             f"{mean_std(cell['mean_image_ap'])} | "
                             f"{statistics.mean(cell['mean_fg_fraction']):.1f} |")
    if summary["pipeline"]:
        lines += ["", "Student − teacher, B-LOC: test PxAP per run, and per-image AP paired over "
                  "every image of the folds (one test per seed: each image is in one fold's test).",
                  "", "| seed | Δ PxAP per fold | per-image Δ (mean) | t | p | n |",
                  "|---|---|---|---|---|---|"]
        for seed in summary["seeds"]:
            mine = sorted((r for r in runs if r["seed"] == seed), key=lambda r: r["fold"])
            deltas = [r["student"]["best-loc"]["pxap"] - r["teacher"]["best-loc"]["pxap"]
                      for r in mine]
            a = {i: v for r in mine for i, v in r["teacher"]["best-loc"]["per_image_ap"].items()}
            b = {i: v for r in mine for i, v in r["student"]["best-loc"]["per_image_ap"].items()}
            shared = sorted(set(a) & set(b))
            test = paired_ttest([a[i] for i in shared], [b[i] for i in shared])
            lines.append(f"| {seed} | " + ", ".join(f"{d:+.1f}" for d in deltas)
                         + f" | {test['mean_difference']:+.2f} | {test['t']:.2f} | "
                         f"{test['p']:.2g} | {test['n']} |")
        lines.append("\nt: two-sided paired Student t-test of student − teacher per-image AP.")
    return "\n".join(lines)
