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


@app.callback()
def main(version: Optional[bool] = typer.Option(None, "--version", help="print the version")):
    if version:
        from histocam import __version__

        typer.echo(__version__)
        raise typer.Exit()
