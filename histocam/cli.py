"""The ``histocam`` command line: a thin typer layer over the library."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from histocam.data.cli import data_app

app = typer.Typer(
    name="histocam",
    help="Weakly-supervised classification and ROI localization in histology images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs"), help="parent folder of the demo run"),
    n_train: int = typer.Option(240, help="synthetic training images"),
    epochs: int = typer.Option(10, help="epochs of the teacher and of PixelCAM"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """PixelCAM end to end on the embedded synthetic H&E benchmark (a few CPU minutes)."""
    from histocam.experiments.demo import run_demo

    run_demo(out, n_train=n_train, seed=seed, epochs=epochs)


@app.command()
def methods() -> None:
    """List the registered WSOL methods and their hyper-parameters."""
    from rich.console import Console
    from rich.table import Table

    from histocam.methods import METHODS

    table = Table("method", "hyper-parameters (default)", "summary")
    for name in METHODS.names():
        cls = METHODS.get(name)
        fields = {k: v for k, v in cls.Config.model_fields.items() if k not in ("name", "backbone")}
        params = ", ".join(f"{k}={v.default}" for k, v in fields.items()) or "-"
        doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split())
        table.add_row(name, params, doc.split(":")[0])
    Console().print(table)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="run YAML"),
    resume: bool = typer.Option(False, help="continue the run from its last checkpoint"),
) -> None:
    """Train a WSOL method: histocam train --config run.yaml KEY=VALUE ... (overrides)."""
    from histocam.train import Trainer, load_run_config

    try:
        run = load_run_config(config, list(ctx.args))
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        best = Trainer(run).fit(resume=resume)
    except (FileExistsError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"done: {run.run_dir}  B-LOC epoch {best['loc_epoch']} (valpx PxAP "
               f"{best['pxap']:.2f}), B-CL epoch {best['cl_epoch']} (valcl accuracy "
               f"{best['accuracy']:.2f})")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="run directory"),
    split: str = typer.Option("test"),
    checkpoint: str = typer.Option("both", help="best-loc, best-cl, last or both"),
    save_maps: bool = typer.Option(False, help="also save the maps (float16 .npz)"),
    separability: bool = typer.Option(False, help="also compute the separability index J"),
    device: str = typer.Option("auto"),
) -> None:
    """Evaluate a trained run on a split; τ* is chosen on valpx and applied to the split."""
    import json

    from histocam.train.evaluate_run import evaluate_checkpoint

    names = ["best-loc", "best-cl"] if checkpoint == "both" else [checkpoint]
    for name in names:
        metrics = evaluate_checkpoint(run, name, split, device=device, save_maps=save_maps,
                                      separability=separability)
        loc = metrics.get("localization", {})
        summary = {"checkpoint": name, "accuracy": metrics["classification"]["accuracy"],
                   **{k: loc[k] for k in ("pxap", "chance", "TP*", "FN*", "FP*", "TN*") if k in loc}}
        typer.echo(json.dumps(summary))


@app.command()
def cams(
    run: Path = typer.Argument(..., help="trained teacher run directory"),
    checkpoint: str = typer.Option("best-loc", help="best-loc, best-cl or last"),
    split: str = typer.Option("train"),
    device: str = typer.Option("auto"),
) -> None:
    """Store a run's low-resolution CAMs of a split (the pseudo-label source of PixelCAM)."""
    from histocam.cams.store import export_cams

    path = export_cams(run, checkpoint, split, device=device, progress=True)
    typer.echo(f"wrote {path} (+ .json)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pixelcam(
    ctx: typer.Context,
    teacher_run: Path = typer.Argument(..., help="trained teacher run directory"),
    name: str | None = typer.Option(None, help="run name (default pixelcam-<teacher method>)"),
) -> None:
    """Train PixelCAM from a trained teacher run (its CAMs are exported if needed); KEY=VALUE
    overrides of the pipeline config, e.g. pixelcam.n=10 pixelcam_train.epochs=5."""
    import yaml

    from histocam.experiments.pixelcam import PipelineConfig, pixelcam_run_config
    from histocam.train import Trainer
    from histocam.train.config import RunConfig, apply_overrides

    base = RunConfig.model_validate(yaml.safe_load((teacher_run / "config.yaml").read_text()))
    tree = apply_overrides({"name": base.name, "out_dir": str(teacher_run.parent),
                            "seed": base.seed, "data": base.data.model_dump(mode="json"),
                            "backbone": base.method.backbone.model_dump(mode="json"),
                            "teacher": base.method.model_dump(mode="json"),
                            "pixelcam_train": base.train.model_dump(mode="json")}, list(ctx.args))
    p = PipelineConfig.model_validate(tree)
    from histocam.cams.store import export_cams, store_paths

    store, _ = store_paths(teacher_run, p.pixelcam.teacher_cams, "train")
    if not store.is_file():
        export_cams(teacher_run, p.pixelcam.teacher_cams, "train", device=p.device, progress=True)
    cfg = pixelcam_run_config(p, teacher_run)
    cfg = cfg.model_copy(update={"out_dir": teacher_run.parent,
                                 "name": name or f"pixelcam-{base.method.name}-{base.name}"})
    Trainer(cfg).fit()
    typer.echo(f"done: {cfg.run_dir}")


pipeline_app = typer.Typer(help="End-to-end pipelines.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("pixelcam", context_settings={"allow_extra_args": True,
                                                     "ignore_unknown_options": True})
def pipeline_pixelcam(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="pipeline YAML"),
    teacher: str | None = typer.Option(None, help="teacher method (cam, deepmil, gradcampp, "
                                                     "layercam, ...)"),
) -> None:
    """Teacher -> stored CAMs -> PixelCAM -> evaluation of both -> comparison table."""
    import yaml

    from histocam.experiments.pixelcam import PipelineConfig, run_pipeline
    from histocam.train.config import apply_overrides

    tree = yaml.safe_load(config.read_text()) if config else {}
    if teacher:
        tree["teacher"] = {"name": teacher}
    try:
        p = PipelineConfig.model_validate(apply_overrides(tree or {}, list(ctx.args)))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    results = run_pipeline(p)
    from histocam.experiments.pixelcam import comparison_table

    typer.echo(comparison_table(results))
    typer.echo(f"\nrun directory: {p.root}")


@app.command("score-maps")
def score_maps(
    maps_dir: Path = typer.Argument(..., help="folder of <id>.npy float maps in [0, 1]"),
    masks_dir: Path = typer.Argument(..., help="folder of <id>.png masks (missing = background)"),
    valpx_maps: Path | None = typer.Option(None, help="B-LOC maps: choose τ* here"),
    valpx_masks: Path | None = typer.Option(None, help="B-LOC masks"),
    size: int = typer.Option(224, help="evaluation size (protocol: 224)"),
    native: bool = typer.Option(False, help="evaluate at each mask's own size instead"),
) -> None:
    """Score saved maps against masks per the protocol; prints metrics JSON on stdout."""
    import json

    from histocam.data.errors import DataError
    from histocam.metrics.score_maps import score_map_dirs

    try:
        report = score_map_dirs(maps_dir, masks_dir, valpx_maps, valpx_masks,
                                None if native else size)
    except (DataError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report, indent=2))


def _print_version(value: bool) -> None:
    if value:
        from histocam import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """Weakly-supervised classification and ROI localization in histology images."""
