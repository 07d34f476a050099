"""The ``histocam`` command line: a thin typer layer over the library.

Every user error (a missing run, file or checkpoint, a bad config key or value, a stale CAM store,
unknown names, unloadable weights) ends in one line ``error: ...`` on stderr and exit status 2;
a traceback means a bug in histocam.
"""

from __future__ import annotations

from pathlib import Path

import typer

from histocam.cli.data_commands import OUTSIDE_ROOT_HELP, data_app, known_split
from histocam.cli.predict_command import predict_command
from histocam.cli.report_commands import register as register_report_commands
from histocam.cli.user_errors import (  # noqa: F401 (user_error_message: API)
    OneLineUsageErrors,
    user_error_message,
    user_errors,
)

BATCH_HELP = ("images per batch (default: the largest that fits the evaluation memory budget, at "
              "most the run's train.eval_batch_size)")

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
register_report_commands(app)  # report, stain-shift, tsne, thresholds


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs"), help="parent folder of the demo run"),
    n_train: int = typer.Option(240, min=2, help="synthetic training images"),
    epochs: int = typer.Option(10, min=1, help="epochs of the teacher and of PixelCAM"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """PixelCAM end to end on the embedded synthetic H&E benchmark (a few CPU minutes)."""
    from histocam.experiments.demo import run_demo

    run_demo(out, n_train=n_train, seed=seed, epochs=epochs)


@app.command()
@user_errors
def methods(family: str | None = typer.Option(None, help="only this family")) -> None:
    """List the registered WSOL methods: family, paper, what the map is, hyper-parameters."""
    from rich.console import Console
    from rich.table import Table

    from histocam.methods import FAMILIES, METHODS
    from histocam.methods.base import MethodConfig

    if family is not None and family not in FAMILIES:
        raise ValueError(f"--family {family!r}: not a family (one of {', '.join(FAMILIES)})")

    table = Table("method", "family", "paper", "map", "hyper-parameters (default)", "summary")
    for name in METHODS.names():
        info = METHODS.info(name)
        if family and info["family"] != family:
            continue
        cls = METHODS.get(name)
        params = []
        for key, field in cls.Config.model_fields.items():
            if key in ("name", "backbone", "map_tta"):  # common to every method
                continue
            default = field.get_default(call_default_factory=True)
            params.append(f"{key}={default.name if isinstance(default, MethodConfig) else default}")
        table.add_row(name, info["family"], info["paper"], info["map"], ", ".join(params) or "-",
                      info["summary"])
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
) -> None:
    """Train a WSOL method: histocam train --config run.yaml KEY=VALUE ... (overrides); on N
    processes: torchrun --nproc_per_node N -m histocam train ... (train.batch_size is global).
    A run that has results is never replaced without --overwrite."""
    from histocam.core.launch import launch
    from histocam.train import Trainer, load_run_config

    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it: pass one")
    run = load_run_config(config, list(ctx.args))
    best = Trainer(run).fit(resume=resume, overwrite=overwrite)
    if not launch().is_main:  # torchrun: one report, by rank 0
        return
    typer.echo(f"done: {run.run_dir}  B-LOC epoch {best['loc_epoch']} (valpx PxAP "
               f"{best['pxap']:.2f}), B-CL epoch {best['cl_epoch']} (valcl accuracy "
               f"{best['accuracy']:.2f})")


@app.command()
@user_errors
def evaluate(
    run: Path = typer.Argument(..., help="run directory"),
    split: str = typer.Option("test"),
    checkpoint: str = typer.Option("both", help="best-loc, best-cl, last or both"),
    data: str | None = typer.Option(None, help="evaluate on another dataset (registered name or "
                                    "path); its results are stored under the data's tag"),
    save_maps: bool = typer.Option(False, help="also save the maps (float16 .npz)"),
    separability: bool = typer.Option(False, help="also compute the separability index J"),
    device: str = typer.Option("auto"),
    batch_size: int | None = typer.Option(None, min=1, help=BATCH_HELP),
    allow_outside_root: bool = typer.Option(False, help=OUTSIDE_ROOT_HELP),
) -> None:
    """Evaluate a trained run on a split; τ* is chosen on the run's valpx and applied to the split.
    On N processes: torchrun --nproc_per_node N -m histocam evaluate RUN (rank 0 writes)."""
    import json

    from histocam.core import collectives
    from histocam.data.config import DataConfig
    from histocam.runs import Run

    known_split(split)
    r = Run(run)
    names = ["best-loc", "best-cl"] if checkpoint == "both" else [checkpoint]
    other = data
    if allow_outside_root:
        if data is None:
            raise ValueError("--allow-outside-root applies to the CSV manifest of --data; the "
                             "run's own data follows data.allow_outside_root of its config")
        other = DataConfig.model_validate({**r.data_config(data).model_dump(exclude_unset=True),
                                           "allow_outside_root": True})
    for name in names:  # under torchrun: one process group, made by the first evaluation
        result = r.evaluate(name, split, data=other, device=device, save_maps=save_maps,
                            separability=separability, batch_size=batch_size)
        summary = {"checkpoint": name, "data": result.data, "accuracy": result.accuracy}
        if result.localization is not None:
            loc = result.localization
            summary.update({"pxap": loc.pxap, "chance": loc.chance, **loc.area_rates})
        if collectives.is_main():
            typer.echo(json.dumps(summary))


@app.command()
@user_errors
def cams(
    run: Path = typer.Argument(..., help="trained teacher run directory"),
    checkpoint: str = typer.Option("best-loc", help="best-loc, best-cl or last"),
    split: str = typer.Option("train"),
    device: str = typer.Option("auto"),
    batch_size: int | None = typer.Option(None, min=1, help=BATCH_HELP),
) -> None:
    """Store a run's low-resolution CAMs of a split (the pseudo-label source of PixelCAM).
    On N processes: torchrun --nproc_per_node N -m histocam cams RUN (rank 0 writes)."""
    from histocam.core import collectives
    from histocam.runs import Run

    known_split(split)
    path = Run(run).export_cams(checkpoint, split, device=device, batch_size=batch_size,
                                progress=True)
    if collectives.is_main():
        typer.echo(f"wrote {path} (+ .json)")


STUDENT_KEYS = ("student.", "seed=", "device=", "deterministic=")

def _train_student(method: str, teacher_run: Path, name: str | None, args: list[str]) -> None:
    """Train the seeded student ``method`` from a trained teacher run (its maps exported unless
    current); the data, backbone and classifier are the teacher's."""
    from histocam.core import collectives
    from histocam.core.configs import apply_overrides
    from histocam.experiments.pipeline import PipelineConfig, student_run_config
    from histocam.runs import Run
    from histocam.train import Trainer

    teacher = Run(teacher_run).require_trained()
    for item in args:
        if not item.startswith(STUDENT_KEYS) or item.startswith("student.method.name="):
            raise ValueError(f"override {item!r}: histocam {method} takes the data, backbone and "
                             "teacher from the teacher run; only student.* (but the method's "
                             "name), seed, device and deterministic can be set (or use `histocam "
                             "pipeline pixelcam`)")
    base = teacher.config
    tree = apply_overrides({
        "out_dir": str(teacher_run.parent), "seed": base.seed, "device": base.device,
        "data": base.data.model_dump(mode="json"),
        "backbone": base.method.backbone.model_dump(mode="json"),
        "student": {"method": {"name": method}, "train": base.train.model_dump(mode="json")},
        "teacher_run": str(teacher_run)}, args)
    p = PipelineConfig.model_validate(tree)
    teacher.stored_maps(p.student.teacher_maps, device=p.device)  # makes the group
    cfg = student_run_config(p, teacher)
    cfg = cfg.model_copy(update={"name": name or f"{cfg.name}-{teacher.dir.name}"})
    Trainer(cfg).fit()  # joins it
    if collectives.is_main():
        typer.echo(f"done: {cfg.run_dir}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def pixelcam(
    ctx: typer.Context,
    teacher_run: Path = typer.Argument(..., help="trained teacher run directory"),
    name: str | None = typer.Option(None, help="run name (default pixelcam-<teacher method>-"
                                    "<teacher run>)"),
) -> None:
    """Train PixelCAM from a trained teacher run (its CAMs are exported unless current);
    KEY=VALUE overrides of the student stage, e.g. student.method.n=10 student.train.epochs=5."""
    _train_student("pixelcam", teacher_run, name, list(ctx.args))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def negev(
    ctx: typer.Context,
    teacher_run: Path = typer.Argument(..., help="trained teacher run directory"),
    name: str | None = typer.Option(None, help="run name (default negev-<teacher method>-"
                                    "<teacher run>)"),
) -> None:
    """Train NEGEV (a decoder on the frozen teacher) from a trained teacher run; KEY=VALUE
    overrides of the student stage, e.g. student.method.negative_term=none."""
    _train_student("negev", teacher_run, name, list(ctx.args))


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
) -> None:
    """Teacher -> stored CAMs -> PixelCAM (or NEGEV) -> evaluation of both -> comparison table.
    On N processes: torchrun --nproc_per_node N -m histocam pipeline pixelcam ..."""
    from histocam.core import collectives
    from histocam.experiments.pipeline import comparison_table, load_pipeline_config, run_pipeline

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
) -> None:
    """Cross-validate a config over patient-disjoint folds × seeds: mean ± std over folds, with
    chance and the colour floor beside every PxAP (KEY=VALUE overrides as for train). Finished
    runs are reused and unfinished ones resumed."""
    from histocam.core.configs import load_config_tree
    from histocam.experiments.crossval import crossval_dir, crossval_table, run_crossval

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seed_list:
        raise ValueError("--seeds: give at least one seed")
    tree = load_config_tree(config, list(ctx.args))
    summary = run_crossval(tree, folds, seed_list, teacher_runs, say=typer.echo)
    typer.echo(crossval_table(summary))
    folder = crossval_dir(tree)
    typer.echo(f"\nwritten: {folder.summary_json}, {folder.summary_md}")


@app.command("score-maps")
@user_errors
def score_maps(
    maps_dir: Path = typer.Argument(..., help="folder of <id>.npy float maps in [0, 1]"),
    masks_dir: Path = typer.Argument(..., help="folder of <id>.png masks (missing = background)"),
    valpx_maps: Path | None = typer.Option(None, help="B-LOC maps: choose τ* here"),
    valpx_masks: Path | None = typer.Option(None, help="B-LOC masks"),
    size: int = typer.Option(224, min=1, help="evaluation size (protocol: 224)"),
    native: bool = typer.Option(False, help="evaluate at each mask's own size instead"),
) -> None:
    """Score saved maps against masks per the protocol; prints metrics JSON on stdout."""
    from histocam.metrics.score_maps import score_map_dirs

    report = score_map_dirs(maps_dir, masks_dir, valpx_maps, valpx_masks, None if native else size)
    typer.echo(report.to_json())


def _print_version(value: bool) -> None:
    if value:
        from histocam import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """Weakly-supervised classification and ROI localization in histology images."""
