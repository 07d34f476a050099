"""The ``histocam`` command line: a thin typer layer over the library.

Every user error (a missing run, file or checkpoint, a bad config key or value, a stale CAM store,
unknown names, unloadable weights) ends in one line ``error: ...`` on stderr and exit status 2;
a traceback means a bug in histocam.

The commands import the library inside their bodies, so that ``histocam --help`` and
``histocam methods`` start without importing torch (``benchmarks/speed/cli_startup.py``). Long
commands show their progress on stderr (``histocam.core.progress``; ``--quiet``: none); stdout
holds the results.
"""

from __future__ import annotations

from pathlib import Path

import typer

from histocam.cli.common_options import BATCH_HELP, QUIET, known_split, show_progress
from histocam.cli.data_commands import data_app
from histocam.cli.evaluate_commands import ensemble, evaluate, score_maps
from histocam.cli.predict_command import predict_command
from histocam.cli.report_commands import register as register_report_commands
from histocam.cli.user_errors import (  # noqa: F401 (user_error_message: API)
    OneLineUsageErrors,
    user_error_message,
    user_errors,
)

app = typer.Typer(
    cls=OneLineUsageErrors,
    name="histocam",
    help="Weakly-supervised classification and ROI localization in histology images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.command("predict")(predict_command)
app.command("evaluate")(evaluate)
app.command("ensemble")(ensemble)
app.command("score-maps")(score_maps)
register_report_commands(app)  # report, stain-shift, tsne, thresholds


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs"), help="parent folder of the demo run"),
    quick: bool = typer.Option(False, help="the quick variant: fewer and smaller images, fewer "
                               "epochs (a few minutes on two CPU cores)"),
    n_train: int | None = typer.Option(None, min=2, help="synthetic training images (default: "
                                       "the variant's)"),
    epochs: int | None = typer.Option(None, min=1, help="epochs of the teacher and of PixelCAM "
                                      "(default: the variant's)"),
    seed: int = typer.Option(0, help="random seed"),
    quiet: bool = QUIET,
) -> None:
    """PixelCAM end to end on the embedded synthetic H&E benchmark: a CAM teacher, its maps,
    PixelCAM trained from them, both evaluated, a figure and a report (a few CPU minutes; --quick:
    fewer and smaller tiles, fewer epochs)."""
    from histocam.experiments.demo import run_demo

    show_progress(quiet)
    run_demo(out, quick=quick, n_train=n_train, epochs=epochs, seed=seed)


@app.command()
@user_errors
def methods(family: str | None = typer.Option(None, help="only this family")) -> None:
    """List the registered WSOL methods: family, paper, what the map is, hyper-parameters."""
    from rich.console import Console
    from rich.table import Table

    from histocam.cli.listing import read_listing

    listing = read_listing()
    if family is not None and family not in listing["families"]:
        raise ValueError(f"--family {family!r}: not a family (one of "
                         f"{', '.join(listing['families'])})")
    table = Table("method", "family", "paper", "map", "hyper-parameters (default)", "summary")
    for m in listing["methods"]:
        if family and m["family"] != family:
            continue
        params = ", ".join(f"{k}={v}" for k, v in m["params"].items()) or "-"
        table.add_row(m["name"], m["family"], m["paper"], m["map"], params, m["summary"])
    Console(width=200).print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def train(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="run YAML"),
    resume: bool = typer.Option(False, help="continue the run from its last checkpoint (with "
                                "the config it was trained with)"),
    overwrite: bool = typer.Option(False, help="delete the run's checkpoints, log, evaluations "
                                   "and stored maps first, if it has any"),
    quiet: bool = QUIET,
) -> None:
    """Train a WSOL method: histocam train --config run.yaml KEY=VALUE ... (overrides); on N
    processes: torchrun --nproc_per_node N -m histocam train ... (train.batch_size is global).
    A run that has results is never replaced without --overwrite."""
    from histocam.core.launch import launch
    from histocam.train import Trainer, load_run_config

    show_progress(quiet)
    run = load_run_config(config, list(ctx.args))
    best = Trainer(run).fit(resume=resume, overwrite=overwrite)
    if not launch().is_main:  # torchrun: one report, by rank 0
        return
    typer.echo(f"done: {run.run_dir}  B-LOC epoch {best['loc_epoch']} (valpx PxAP "
               f"{best['pxap']:.2f}), B-CL epoch {best['cl_epoch']} (valcl accuracy "
               f"{best['accuracy']:.2f})")


@app.command()
@user_errors
def cams(
    run: Path = typer.Argument(..., help="trained teacher run directory"),
    checkpoint: str = typer.Option("best-loc", help="best-loc, best-cl or last"),
    split: str = typer.Option("train"),
    device: str = typer.Option("auto"),
    batch_size: int | None = typer.Option(None, min=1, help=BATCH_HELP),
    quiet: bool = QUIET,
) -> None:
    """Store a run's low-resolution CAMs of a split (the pseudo-label source of PixelCAM).
    On N processes: torchrun --nproc_per_node N -m histocam cams RUN (rank 0 writes)."""
    from histocam.core import collectives
    from histocam.runs import Run

    known_split(split)
    show_progress(quiet)
    path = Run(run).export_cams(checkpoint, split, device=device, batch_size=batch_size,
                                progress=True)
    if collectives.is_main():
        typer.echo(f"wrote {path} (+ .json)")


STUDENT_KEYS = ("student.", "seed=", "device=", "deterministic=")

def _train_student(method: str, teacher_run: Path, name: str | None, args: list[str],
                   resume: bool = False, overwrite: bool = False) -> None:
    """Train the seeded student ``method`` from a trained teacher run (its maps exported unless
    current); the data, backbone and classifier are the teacher's. ``resume`` continues the
    student run, ``overwrite`` replaces it (``Trainer.fit``)."""
    from histocam.core import collectives
    from histocam.experiments.pipeline import PipelineConfig, student_run_config
    from histocam.runs import Run
    from histocam.train import Trainer
    from histocam.train.config_errors import validate_config

    teacher = Run(teacher_run).require_trained()
    for item in args:
        if not item.startswith(STUDENT_KEYS) or item.startswith("student.method.name="):
            raise ValueError(f"override {item!r}: histocam {method} takes the data, backbone and "
                             "teacher from the teacher run; only student.* (but the method's "
                             "name), seed, device and deterministic can be set (or use `histocam "
                             "pipeline pixelcam`)")
    base = teacher.config
    p = validate_config(PipelineConfig, teacher.dir.config, args, base={
        "out_dir": str(teacher_run.parent), "seed": base.seed, "device": base.device,
        "data": base.data.model_dump(mode="json"),
        "backbone": base.method.backbone.model_dump(mode="json"),
        "student": {"method": {"name": method}, "train": base.train.model_dump(mode="json")},
        "teacher_run": str(teacher_run)})
    teacher.stored_maps(p.student.teacher_maps, device=p.device)  # makes the group
    cfg = student_run_config(p, teacher)
    cfg = cfg.model_copy(update={"name": name or f"{cfg.name}-{teacher.dir.name}"})
    Trainer(cfg).fit(resume=resume, overwrite=overwrite)  # joins it
    if collectives.is_main():
        typer.echo(f"done: {cfg.run_dir}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def pixelcam(
    ctx: typer.Context,
    teacher_run: Path = typer.Argument(..., help="trained teacher run directory"),
    name: str | None = typer.Option(None, help="run name (default pixelcam-<teacher method>-"
                                    "<teacher run>)"),
    resume: bool = typer.Option(False, help="continue the student run from its last checkpoint"),
    overwrite: bool = typer.Option(False, help="delete the student run's results first, if it "
                                   "has any"),
    quiet: bool = QUIET,
) -> None:
    """Train PixelCAM from a trained teacher run (its CAMs are exported unless current);
    KEY=VALUE overrides of the student stage, e.g. student.method.n=10 student.train.epochs=5."""
    show_progress(quiet)
    _train_student("pixelcam", teacher_run, name, list(ctx.args), resume, overwrite)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def negev(
    ctx: typer.Context,
    teacher_run: Path = typer.Argument(..., help="trained teacher run directory"),
    name: str | None = typer.Option(None, help="run name (default negev-<teacher method>-"
                                    "<teacher run>)"),
    resume: bool = typer.Option(False, help="continue the student run from its last checkpoint"),
    overwrite: bool = typer.Option(False, help="delete the student run's results first, if it "
                                   "has any"),
    quiet: bool = QUIET,
) -> None:
    """Train NEGEV (a decoder on the frozen teacher) from a trained teacher run; KEY=VALUE
    overrides of the student stage, e.g. student.method.negative_term=none."""
    show_progress(quiet)
    _train_student("negev", teacher_run, name, list(ctx.args), resume, overwrite)


pipeline_app = typer.Typer(help="End-to-end pipelines.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("pixelcam", context_settings={"allow_extra_args": True,
                                                     "ignore_unknown_options": True})
@user_errors
def pipeline_pixelcam(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="pipeline YAML"),
    teacher: str | None = typer.Option(None, help="teacher method (cam, deepmil, gradcampp, "
                                                     "layercam, ...)"),
    student: str | None = typer.Option(None, help="student method: pixelcam (default) or negev"),
    quiet: bool = QUIET,
) -> None:
    """Teacher -> stored CAMs -> PixelCAM (or NEGEV) -> evaluation of both -> comparison table.
    On N processes: torchrun --nproc_per_node N -m histocam pipeline pixelcam ..."""
    from histocam.core import collectives
    from histocam.experiments.pipeline import comparison_table, load_pipeline_config, run_pipeline

    show_progress(quiet)
    overrides = list(ctx.args) + ([f"teacher.method.name={teacher}"] if teacher else [])
    overrides += [f"student.method.name={student}"] if student else []
    p = load_pipeline_config(config, overrides)
    results = run_pipeline(p)  # under torchrun: one process group, rank 0 writes and reports
    if collectives.is_main():
        typer.echo(comparison_table(results))
        typer.echo(f"\nrun directory: {p.root}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def crossval(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", "-c", help="a run config (one method) or a "
                                "pipeline config (teacher -> student)"),
    folds: int = typer.Option(3, min=2, help="patient-disjoint folds (data.folds)"),
    seeds: str = typer.Option("0,1,2", help="comma-separated training seeds"),
    teacher_runs: str | None = typer.Option(
        None, help="pipeline configs: a crossval folder of teacher runs (its fold<f>-s<seed> runs "
        "are the teachers, as teacher_run), or a path with {fold} and {seed}, e.g. an earlier "
        "round's students: runs/cv/pix/fold{fold}-s{seed}/pixelcam-cam"),
    mean_map: bool = typer.Option(False, help="also evaluate each fold's mean map of its seeds' "
                                  "runs at B-LOC (histocam ensemble; two or more seeds)"),
    quiet: bool = QUIET,
) -> None:
    """Cross-validate a config over patient-disjoint folds × seeds: mean ± std over folds, with
    chance and the colour floor beside every PxAP (KEY=VALUE overrides as for train). Finished
    runs are reused and unfinished ones resumed."""
    from histocam.core.configs import load_config_tree
    from histocam.experiments.crossval import crossval_dir, crossval_table, run_crossval

    show_progress(quiet)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seed_list:
        raise ValueError("--seeds: give at least one seed")
    tree = load_config_tree(config, list(ctx.args))
    summary = run_crossval(tree, folds, seed_list, teacher_runs, say=typer.echo,
                           mean_map=mean_map)
    typer.echo(crossval_table(summary))
    folder = crossval_dir(tree)
    typer.echo(f"\nwritten: {folder.summary_json}, {folder.summary_md}")


def _print_version(value: bool) -> None:
    if value:
        from histocam import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """Weakly-supervised classification and ROI localization in histology images."""
