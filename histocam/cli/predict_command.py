"""``histocam predict RUN INPUT... --out DIR``: a trained run on images, folders, CSV manifests and
whole slides (``histocam.predict``)."""

from __future__ import annotations

from pathlib import Path

import typer

from histocam.cli.user_errors import user_errors


@user_errors
def predict_command(
    run: Path = typer.Argument(..., help="trained run directory"),
    inputs: list[str] = typer.Argument(..., help="images, slides (.svs, .ndpi, ..., tiled TIFF), "
                                       "folders of them, or CSV manifests (image/path column)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    checkpoint: str = typer.Option("best-loc", help="best-loc (maps), best-cl (labels), last, or "
                                   "both: labels from best-cl, maps from best-loc"),
    map_class: str = typer.Option("auto", help="class of the maps: a class name, predicted, or "
                                  "auto (the positive class when the data has a negative class)"),
    threshold: float | None = typer.Option(None, help="region threshold (default: the run's τ* "
                                           "from `histocam evaluate`)"),
    regions: bool = typer.Option(True, help="write the region at τ* (PNG + GeoJSON)"),
    batch_size: int | None = typer.Option(None, help="default: the run's eval batch size"),
    workers: int = typer.Option(2, help="DataLoader workers reading images and tiles"),
    device: str = typer.Option("auto"),
    tile: int | None = typer.Option(None, help="slide tile size in pixels at the tile scale "
                                    "(default: the run's training image size; 512 for file data)"),
    overlap: int | None = typer.Option(None, help="tile overlap (default: a quarter tile)"),
    mpp: float | None = typer.Option(None, help="tile scale in microns per pixel (default: "
                                     "level 0)"),
    map_downsample: int = typer.Option(8, help="tile-scale pixels per slide-map pixel"),
    min_tissue: float = typer.Option(0.0, help="keep tiles whose tissue fraction exceeds this"),
    backend: str = typer.Option("auto", help="slide reader: auto, openslide or tiffslide"),
    weight: bool = typer.Option(True, help="slides: weight each tile's map by its probability "
                                "of the map's class"),
    redo: bool = typer.Option(False, help="recompute slides already done"),
    progress: bool = typer.Option(True, help="progress bars"),
) -> None:
    """Predict classes and maps of images and whole slides with a trained run; see the README
    for the output files. Under torchrun, each process takes its share of the inputs."""
    from histocam.predict import ImageOutputs, SlideOptions, predict

    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"--workers must be at least 0, got {workers}")
    options = SlideOptions(tile=tile, overlap=overlap, mpp=mpp, map_downsample=map_downsample,
                           min_tissue=min_tissue, backend=backend, weight_by_probability=weight,
                           regions=regions, redo=redo)
    result = predict(run, inputs, out, checkpoint=checkpoint, device=device, map_class=map_class,
                     threshold=threshold, batch_size=batch_size, num_workers=workers,
                     image_outputs=ImageOutputs(regions=regions), slide_options=options,
                     progress=progress)
    for note in result.notes:
        typer.echo(f"note: {note}")
    if result.images_csv is not None:
        typer.echo(f"images: {result.images_csv}")
    for s in result.slides:
        state = "already done" if s.get("skipped") else f"{s['tiles']} tiles"
        typer.echo(f"slide {s['slide']}: {s['prediction']} ({state}) -> {out}")
