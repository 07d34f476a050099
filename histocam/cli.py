"""The ``histocam`` command line: a thin typer layer over the library."""

from __future__ import annotations

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
