"""The ``histocam`` command line: a thin typer layer over the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
    out: Path = typer.Option(Path("runs/demo"), help="run directory"),
    n_train: int = typer.Option(64, help="synthetic training images per class"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Run histocam end to end on the embedded synthetic H&E benchmark."""
    from histocam.experiments.demo import run_demo

    run_demo(out, n_train=n_train, seed=seed)


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
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="run YAML"),
    resume: bool = typer.Option(False, help="continue the run from its last checkpoint"),
) -> None:
    """Train a WSOL method: histocam train --config run.yaml [key=value ...]."""
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
                   **{k: loc[k] for k in ("pxap", "TP*", "FN*", "FP*", "TN*") if k in loc}}
        typer.echo(json.dumps(summary))


@app.command("score-maps")
def score_maps(
    maps_dir: Path = typer.Argument(..., help="folder of <id>.npy float maps in [0, 1]"),
    masks_dir: Path = typer.Argument(..., help="folder of <id>.png masks (missing = background)"),
    valpx_maps: Optional[Path] = typer.Option(None, help="B-LOC maps: choose τ* here"),
    valpx_masks: Optional[Path] = typer.Option(None, help="B-LOC masks"),
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


@app.callback()
def main(version: Optional[bool] = typer.Option(None, "--version", help="print the version")):
    if version:
        from histocam import __version__

        typer.echo(__version__)
        raise typer.Exit()
