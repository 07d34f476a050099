"""``histocam predict RUN INPUT... --out DIR``: a trained run on images, folders, CSV manifests and
whole slides (``histocam.predict``)."""

from __future__ import annotations

from pathlib import Path

import typer

from histocam.cli.common_options import BATCH_HELP, MAX_MPP, MIN_MPP, QUIET, show_progress
from histocam.cli.user_errors import user_errors

SLIDES = "slides"
TISSUE = "tissue detection"
OUTPUTS = "slide outputs"
BATCH = "batches"


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
    threshold: float | None = typer.Option(None, min=0.0, max=1.0, help="region threshold "
                                           "(default: the run's τ* from `histocam evaluate`; "
                                           "slide probability maps: 0.5)"),
    regions: bool = typer.Option(True, help="write the region at the threshold (PNG + GeoJSON)"),
    batch_size: int | None = typer.Option(None, min=1, help=BATCH_HELP),
    workers: int = typer.Option(2, min=0, help="DataLoader workers reading images and tiles"),
    device: str = typer.Option("auto"),
    tile: int | None = typer.Option(None, min=8, help="tile size in pixels at the tile scale "
                                    "(default: the run's training image size; 512 for file "
                                    "data)", rich_help_panel=SLIDES),
    overlap: int | None = typer.Option(None, min=0, help="tile overlap in pixels (default: a "
                                       "quarter tile)", rich_help_panel=SLIDES),
    mpp: float | None = typer.Option(None, min=MIN_MPP, max=MAX_MPP, help="tile scale in microns "
                                     "per pixel (default: the run's training scale)",
                                     rich_help_panel=SLIDES),
    magnification: float | None = typer.Option(None, min=0.1, max=1000.0, help="tile scale as a "
                                               "magnification (20: 0.5 µm/px, 40: 0.25 µm/px)",
                                               rich_help_panel=SLIDES),
    slide_mpp: float | None = typer.Option(None, min=MIN_MPP, max=MAX_MPP, help="level-0 microns "
                                           "per pixel of slides whose file records none",
                                           rich_help_panel=SLIDES),
    mpp_table: Path | None = typer.Option(None, help="CSV of slide,mpp rows: level-0 microns per "
                                          "pixel by slide (path, name or stem), over the file's",
                                          rich_help_panel=SLIDES),
    map_downsample: int = typer.Option(8, min=1, help="tile pixels per slide-map pixel",
                                       rich_help_panel=SLIDES),
    min_tissue: float = typer.Option(0.0, min=0.0, max=1.0, help="keep tiles whose tissue "
                                     "fraction exceeds this", rich_help_panel=SLIDES),
    backend: str = typer.Option("auto", help="slide reader: auto, openslide or tiffslide",
                                rich_help_panel=SLIDES),
    tissue_threshold: float = typer.Option(0.03, min=0.0, max=3.0, help="optical density above "
                                           "the glass that is tissue", rich_help_panel=TISSUE),
    tissue_smooth: float = typer.Option(2.0, min=0.0, max=1000.0, help="Gaussian σ in µm before "
                                        "the threshold", rich_help_panel=TISSUE),
    tissue_close: float = typer.Option(4.0, min=0.0, max=1000.0, help="closing radius in µm",
                                       rich_help_panel=TISSUE),
    tissue_max_hole: float = typer.Option(10_000.0, min=0.0, max=1e9, help="holes in tissue "
                                          "smaller than this (µm²) are tissue",
                                          rich_help_panel=TISSUE),
    tissue_min_area: float = typer.Option(2_000.0, min=0.0, max=1e9, help="fragments smaller "
                                          "than this (µm²) are not tissue",
                                          rich_help_panel=TISSUE),
    slide_map: str = typer.Option("auto", help="probability (each tile's probability, blended), "
                                  "map (the method's maps), or auto (map for methods whose maps "
                                  "are probabilities)", rich_help_panel=OUTPUTS),
    weight: bool = typer.Option(True, help="slide maps of kind map: weight each tile's map by "
                                "its probability of the map's class", rich_help_panel=OUTPUTS),
    aggregation: str = typer.Option("auto", help="slide label: max, topk (mean of the top-k "
                                    "tiles), area (tissue fraction in the region), mean; auto: "
                                    "topk, or mean without a positive class",
                                    rich_help_panel=OUTPUTS),
    top_k: int = typer.Option(5, min=1, help="tiles averaged by --aggregation topk",
                              rich_help_panel=OUTPUTS),
    region_smooth: float = typer.Option(20.0, min=0.0, max=10_000.0, help="Gaussian σ in µm of "
                                        "the map before the region threshold",
                                        rich_help_panel=OUTPUTS),
    region_min_area: float = typer.Option(10_000.0, min=0.0, max=1e12, help="smallest region "
                                          "reported, µm²", rich_help_panel=OUTPUTS),
    heatmap_rgba: bool = typer.Option(False, help="also write STEM.heatmap-rgba.tif (colour map, "
                                      "value as alpha)", rich_help_panel=OUTPUTS),
    overlay_scale: str = typer.Option("fixed", help="overlay colours: fixed (0–1) or pNN (0 to "
                                      "the NN-th percentile on tissue)", rich_help_panel=OUTPUTS),
    skip_errors: bool | None = typer.Option(None, "--skip-errors/--no-skip-errors",
                                            help="log a bad file and go on (default: on for "
                                            "folders, manifests and several files)",
                                            rich_help_panel=BATCH),
    shard: str | None = typer.Option(None, help="i/N: this process's share of the slides, N "
                                     "processes side by side (default under torchrun: "
                                     "RANK/WORLD_SIZE)", rich_help_panel=BATCH),
    redo: bool = typer.Option(False, help="recompute slides already done (or done with other "
                              "settings)", rich_help_panel=BATCH),
    quiet: bool = QUIET,
) -> None:
    """Predict classes and maps of images and whole slides with a trained run; the output files
    are described in docs/slides.md. Exits 1 when some inputs failed (each named on an error line)."""
    from histocam.predict import ImageOutputs, SlideOptions, predict
    from histocam.predict.batch import parse_shard
    from histocam.wsi.scale import read_mpp_table
    from histocam.wsi.tissue import TissueOptions

    show_progress(quiet)
    shard_spec = parse_shard(shard) if shard is not None else None
    tissue = TissueOptions(threshold=tissue_threshold, smooth_um=tissue_smooth,
                           close_um=tissue_close, max_hole_um2=tissue_max_hole,
                           min_area_um2=tissue_min_area)
    options = SlideOptions(tile=tile, overlap=overlap, mpp=mpp, magnification=magnification,
                           slide_mpp=slide_mpp, map_downsample=map_downsample,
                           min_tissue=min_tissue, tissue=tissue, backend=backend,
                           num_workers=workers, slide_map=slide_map, weight_by_probability=weight,
                           aggregation=aggregation, top_k=top_k, regions=regions,
                           region_smooth_um=region_smooth, region_min_area_um2=region_min_area,
                           heatmap_rgba=heatmap_rgba, overlay_scale=overlay_scale,
                           redo=redo).check()
    if mpp_table is not None:
        options.mpp_table = read_mpp_table(mpp_table)
    result = predict(run, inputs, out, checkpoint=checkpoint, device=device, map_class=map_class,
                     threshold=threshold, batch_size=batch_size, num_workers=workers,
                     image_outputs=ImageOutputs(regions=regions), slide_options=options,
                     progress=True, skip_errors=skip_errors, shard=shard_spec)
    for note in result.notes:
        typer.echo(f"note: {note}")
    for path, why in result.skipped:
        typer.echo(f"skipped {path}: {why}")
    if result.images_csv is not None:
        typer.echo(f"images: {result.images_csv}")
    for s in result.slides:
        state = "already done" if s.get("skipped") else f"{s['tiles']} tiles"
        score = "" if s.get("score") is None else f" {s['aggregation']} {s['score']:.3g}"
        typer.echo(f"slide {s['slide']}: {s['label']}{score} ({state})")
    typer.echo(f"summary: {result.summary_csv}")
    for _, error in result.failures:
        typer.echo(f"error: {error}", err=True)
    if result.failures:
        raise typer.Exit(1)
