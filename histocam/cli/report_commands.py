"""``histocam report`` and the robustness experiments whose results the report shows:
``histocam stain-shift``, ``histocam tsne`` and ``histocam thresholds``."""

from __future__ import annotations

from pathlib import Path

import typer

from histocam.cli.common_options import QUIET, show_progress
from histocam.cli.user_errors import user_errors


@user_errors
def report(
    runs: list[Path] = typer.Argument(None, help="run directories (or folders of runs, e.g. a "
                                      "pipeline's)", show_default=False),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="the HTML file to write"),
    gallery: int = typer.Option(3, min=0, help="best, worst and random images per class"),
    evaluate: bool = typer.Option(False, help="first evaluate checkpoints with no test metrics"),
    title: str = typer.Option("histocam report", help="page title"),
    device: str = typer.Option("cpu", help="for maps the evaluation did not store"),
    slides: list[Path] = typer.Option(None, help="`histocam predict` output folders: a section of "
                                      "their slides (thumbnail, overlay, score, areas)",
                                      show_default=False),
    quiet: bool = QUIET,
) -> None:
    """One self-contained HTML page (no network, no script) comparing runs: configs, curves,
    test tables, threshold curves, galleries, paired t-tests and the experiments' plots; and the
    slides `histocam predict` wrote, with --slides."""
    from histocam.report import build_report

    show_progress(quiet)
    path = build_report(runs or [], out, n_gallery=gallery, device=device, evaluate=evaluate,
                        title=title, slides=slides or [])
    typer.echo(f"report: {path}")


@user_errors
def stain_shift(
    run: Path = typer.Argument(..., help="trained run directory"),
    max_strength: float = typer.Option(0.5, min=0.0, max=10.0, help="strength of the last level "
                                       "(above 0)"),
    levels: int = typer.Option(10, min=1, help="number of shifted levels (level 0 = original)"),
    seed: int = typer.Option(0, help="seed of the shift direction in HED space"),
    checkpoint: str = typer.Option("both", help="best-loc, best-cl or both"),
    device: str = typer.Option("auto"),
    quiet: bool = QUIET,
) -> None:
    """CL and PxAP of the test images re-stained at increasing strengths (PixelCAM Figs. 4/5)."""
    from histocam.experiments.stain_shift import run_stain_shift

    show_progress(quiet)
    path = run_stain_shift(run, checkpoints=_checkpoints(checkpoint), max_strength=max_strength,
                           n_levels=levels, seed=seed, device=device)
    typer.echo(f"wrote {path}")


@user_errors
def tsne(
    run: Path = typer.Argument(..., help="trained run directory"),
    checkpoint: str = typer.Option("best-loc", help="best-loc or best-cl"),
    images: int = typer.Option(3, min=1, help="images per class"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    quiet: bool = QUIET,
) -> None:
    """t-SNE of FG/BG pixel features and the separability J (PixelCAM Figs. 19–24, App. D)."""
    from histocam.experiments.tsne import run_tsne

    show_progress(quiet)
    if checkpoint not in ("best-loc", "best-cl"):
        raise ValueError(f"--checkpoint {checkpoint!r}: expected best-loc or best-cl")
    path = run_tsne(run, checkpoint=checkpoint, n_images=images, seed=seed, device=device)
    typer.echo(f"wrote {path}")


@user_errors
def thresholds(
    run: Path = typer.Argument(..., help="run directory (evaluated first if needed)"),
    device: str = typer.Option("auto"),
    quiet: bool = QUIET,
) -> None:
    """Share of pixels above each threshold vs localisation and PxAP (survey Fig. 8)."""
    from histocam.experiments.thresholds import run_thresholds

    show_progress(quiet)
    typer.echo(f"wrote {run_thresholds(run, device=device)}")


def _checkpoints(value: str) -> tuple[str, ...]:
    if value == "both":
        return ("best-loc", "best-cl")
    if value not in ("best-loc", "best-cl"):
        raise ValueError(f"--checkpoint {value!r}: expected best-loc, best-cl or both")
    return (value,)


def register(app: typer.Typer) -> None:
    """Add the commands of this file to ``app``."""
    app.command("report")(report)
    app.command("stain-shift")(stain_shift)
    app.command("tsne")(tsne)
    app.command("thresholds")(thresholds)
