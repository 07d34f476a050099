"""``histocam data ...`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from histocam.cli.common_options import (
    MAX_MPP,
    MIN_MPP,
    OUTSIDE_ROOT_HELP,
    QUIET,
    known_split,
    show_progress,
)
from histocam.cli.user_errors import user_errors

if TYPE_CHECKING:
    from histocam.data.check import CheckReport

data_app = typer.Typer(help="Inspect, validate and generate datasets.", no_args_is_help=True)
console = Console(width=120) if not Console().is_terminal else Console()


def print_report(report: CheckReport) -> None:
    """Summary tables (counts, sizes, mask coverage) followed by every problem found."""
    import numpy as np

    names = report.class_names
    console.print(f"[bold]{report.name}[/]  classes: "
                  + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    for note in report.notes:
        console.print(f"  {note}")
    counts = Table("split", "images", *names, "with mask", "sizes W×H (count)", title="images")
    for split, s in report.splits.items():
        sizes = ", ".join(f"{w}×{h} ({c})" for (w, h), c in s.sizes.most_common(3))
        if len(s.sizes) > 3:
            sizes += f", +{len(s.sizes) - 3} more"
        counts.add_row(split, str(s.n), *(str(s.per_class.get(i, 0)) for i in range(len(names))),
                       str(s.with_mask), sizes)
    total = report.total
    counts.add_row("[bold]all readable (unique)[/]", str(total.n),
                   *(str(total.per_class.get(i, 0)) for i in range(len(names))),
                   str(total.with_mask), "")
    console.print(counts)
    cover = Table("split", "class", "masks", "mean", "median", "min", "max",
                  title="foreground fraction of masks")
    for split, s in report.splits.items():
        for c, v in sorted(s.coverage.items()):
            arr = np.asarray(v)
            label = names[c] if c < len(names) else str(c)
            cover.add_row(split, label, str(arr.size), f"{arr.mean():.3f}", f"{np.median(arr):.3f}",
                          f"{arr.min():.3f}", f"{arr.max():.3f}")
    if cover.row_count:
        console.print(cover)
    for problem in report.problems:
        style = "red" if problem.severity.value == "error" else "yellow"
        console.print(f"[{style}]{escape(str(problem))}[/]", highlight=False, soft_wrap=True)
    if total.unreadable:
        console.print(f"[red]{total.unreadable} listed image(s) are missing or unreadable "
                      "(listed above by name)[/]")
    console.print(f"{total.n} readable images: "
                  + ", ".join(f"{total.per_class.get(i, 0)} {n}" for i, n in enumerate(names))
                  + f"; {total.with_mask} with masks; "
                  f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")


@data_app.command("check")
@user_errors
def check(
    path: str = typer.Argument(..., help="dataset name or path (GlaS folder, WSOL lists, CSV)"),
    root: Path | None = typer.Option(None, help="image root for WSOL split lists"),
    classes: str | None = typer.Option(None, help="comma-separated class names"),
    split: list[str] | None = typer.Option(None, help="check only these splits"),
    seed: int = typer.Option(0, help="split seed for datasets without split lists"),
    allow_outside_root: bool = typer.Option(False, help=OUTSIDE_ROOT_HELP),
) -> None:
    """Validate a dataset: summary per split and class, and every problem found."""
    from pydantic import ValidationError

    from histocam.data.check import check_source
    from histocam.data.config import DataConfig
    from histocam.data.open import open_source

    for name in split or []:
        known_split(name)
    try:
        config = DataConfig(dataset=path, root=root, split_seed=seed,
                            classes=classes.split(",") if classes else None,
                            allow_outside_root=allow_outside_root)
    except ValidationError as exc:  # an option this dataset does not use
        raise ValueError("; ".join(e["msg"].removeprefix("Value error, ")
                                   for e in exc.errors())) from None
    report = check_source(open_source(config), split)
    print_report(report)
    if report.errors:
        raise typer.Exit(1)


@data_app.command("synth")
@user_errors
def synth(
    out: Path = typer.Option(..., help="output folder (WSOL split-list layout)"),
    domain: str = typer.Option("colon", help="colon (GlaS-like) or node (CAMELYON-like)"),
    seed: int = typer.Option(0),
    size: int = typer.Option(256, min=64, help="tile size"),
    n_train: int = typer.Option(240, min=2),
    n_valcl: int = typer.Option(40, min=2),
    n_test: int = typer.Option(120, min=2),
    stain_shift: float = typer.Option(0.0, min=0.0, max=3.0,
                                      help="0 = source stain; higher = further away"),
    quiet: bool = QUIET,
) -> None:
    """Write a synthetic H&E dataset to disk in the same layout as real data."""
    from pydantic import ValidationError

    from histocam.data.config import SyntheticConfig
    from histocam.data.synthetic import DOMAINS, write_synthetic

    if domain not in DOMAINS:
        raise ValueError(f"--domain {domain!r}: unknown domain (known: {', '.join(DOMAINS)})")
    try:
        config = SyntheticConfig(seed=seed, size=size, n_train=n_train, n_valcl=n_valcl,
                                 n_test=n_test, stain_shift=stain_shift)
    except ValidationError as exc:
        raise ValueError("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')} "
                                   f"{e['input']!r}: {e['msg']}" for e in exc.errors())) from None
    show_progress(quiet)
    write_synthetic(domain, out, config, progress=True)
    console.print(f"wrote synthetic-{domain} to {out}; check it with: histocam data check {out}")


@data_app.command("gallery")
@user_errors
def gallery(
    dataset: str = typer.Argument(..., help="dataset name or path"),
    out: Path = typer.Option(..., help="PNG file to write"),
    split: str = typer.Option("train"),
    n: int = typer.Option(16, min=1, help="number of samples (alternating classes)"),
    root: Path | None = typer.Option(None, help="image root for WSOL split lists"),
    allow_outside_root: bool = typer.Option(False, help=OUTSIDE_ROOT_HELP),
) -> None:
    """Save a contact sheet of samples with their mask outlines."""
    from histocam.data.config import DataConfig
    from histocam.data.contact_sheet import save_gallery
    from histocam.data.open import open_dataset

    known_split(split)
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; --out takes the PNG file to write")
    config = DataConfig(dataset=dataset, root=root, allow_outside_root=allow_outside_root)
    save_gallery(open_dataset(config, split), out, n=n, title=f"{dataset} ({split})")
    console.print(f"wrote {out}")


def _size(text: str) -> tuple[int, int]:
    """``W`` or ``WxH`` -> (width, height)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise ValueError(f"--size {text!r}: expected a width (e.g. 4096) or WIDTHxHEIGHT "
                         "(e.g. 4096x3072) in pixels")
    return values[0], values[-1]


@data_app.command("synth-slide")
@user_errors
def synth_slide(
    out: Path = typer.Option(..., help="output folder"),
    size: str = typer.Option("4096", help="level-0 size: W or WxH pixels"),
    seed: int = typer.Option(0),
    tumours: int = typer.Option(3, min=0, help="tumour blobs (0: a normal slide)"),
    tile: int = typer.Option(256, min=64, help="rendered tile size: the synthetic-node tile size "
                             "of the runs to test (level 0 = their scale)"),
    mpp: float = typer.Option(0.5, min=MIN_MPP, max=MAX_MPP,
                              help="level-0 microns per pixel written in the TIFF"),
    mask_downsample: int = typer.Option(16, min=1, help="level-0 pixels per pixel of the mask "
                                        "PNG"),
    name: str = typer.Option("synthetic-slide", help="file stem of the slide and its files"),
    stain: str = typer.Option("he", help="he (H&E) or ihc (pale DAB/haematoxylin)"),
    quiet: bool = QUIET,
) -> None:
    """Write a synthetic pyramidal TIFF slide of synthetic-node tissue with a known tumour region:
    the slide, its GeoJSON annotation (level-0 pixels) and its masks (tumour, tissue)."""
    from histocam.wsi.synth_slide import write_synth_slide

    width, height = _size(size)
    show_progress(quiet)
    made = write_synth_slide(out, width=width, height=height, tile=tile, tumours=tumours, seed=seed,
                             mpp=mpp, mask_downsample=mask_downsample, name=name, progress=True,
                             stain=stain)
    fraction = made.tumour_pixels / made.tissue_pixels if made.tissue_pixels else 0.0
    console.print(f"wrote {made.slide} ({width}×{height}, {mpp} µm/px): tumour {fraction:.1%} of "
                  f"the tissue; annotation {made.geojson.name}; masks in {made.mask_tif.parent}")


@data_app.command("patches")
@user_errors
def patches(
    slides: list[Path] = typer.Argument(..., help="slides, or folders of slides"),
    annotations: list[Path] = typer.Option(..., help="annotation files (GeoJSON, ASAP XML) or "
                                           "folders of them, named as their slides; slides "
                                           "without one are normal slides"),
    out: Path = typer.Option(..., help="output folder (WSOL split-list layout)"),
    size: int = typer.Option(512, min=8, help="patch side in level-0 pixels"),
    tissue: float = typer.Option(0.10, min=0.0, max=1.0,
                                 help="p_t: least tissue fraction, at low level and level 0"),
    p0: float = typer.Option(0.20, min=0.0, max=1.0, help="least tumour fraction of a tumour "
                             "patch"),
    p1: float = typer.Option(0.50, min=0.0, max=1.0, help="tumour fraction above which patches "
                             "are category 2"),
    pn: float = typer.Option(0.01, min=0.0, max=1.0, help="category-2 patches drawn per "
                             "category-1 patch"),
    valcl_fraction: float = typer.Option(0.2, min=0.0, max=1.0,
                                         help="slides of each class in valcl"),
    test_fraction: float = typer.Option(0.2, min=0.0, max=1.0,
                                        help="slides of each class in test"),
    valpx_per_class: int = typer.Option(5, min=1, help="valpx patches per class (taken from "
                                        "valcl)"),
    splits: Path | None = typer.Option(None, help="CSV of slide,split (train/valcl/test) instead "
                                       "of the seeded slide split"),
    exclude: list[str] = typer.Option(["_2", "Exclusion"], help="annotation classes that are "
                                      "exclusions (CAMELYON16: _2)"),
    seed: int = typer.Option(0),
    backend: str = typer.Option("auto", help="auto, openslide or tiffslide"),
    slide_mpp: float | None = typer.Option(None, min=MIN_MPP, max=MAX_MPP, help="level-0 microns "
                                           "per pixel of slides whose file records none (for "
                                           "the tissue sizes)"),
    quiet: bool = QUIET,
) -> None:
    """Build a WSOL patch benchmark from annotated slides (survey Appendix B, CAMELYON16-512)."""
    from histocam.predict.inputs import collect_inputs
    from histocam.wsi.patches import PatchProtocol, build_patch_benchmark

    show_progress(quiet)
    found = collect_inputs(list(slides))
    if found.images:
        raise ValueError(f"{found.images[0]}: not a slide (a plain image); give slides only")
    protocol = PatchProtocol(size=size, p_tissue=tissue, p0=p0, p1=p1, p_n=pn,
                             valcl_fraction=valcl_fraction, test_fraction=test_fraction,
                             valpx_per_class=valpx_per_class, seed=seed, backend=backend,
                             exclude=tuple(exclude), slide_mpp=slide_mpp)
    summary = build_patch_benchmark(found.slides, list(annotations), out, protocol,
                                    split_file=splits, progress=True)
    for split, counts in summary.counts.items():
        console.print(f"{split}: " + ", ".join(f"{n} {c}" for c, n in counts.items())
                      + (f" (slides: {', '.join(summary.slides[split])})"
                         if split in summary.slides else ""))
    for warning in summary.warnings:
        console.print(f"[yellow]warning: {escape(warning)}[/]", highlight=False)
    console.print(f"wrote {out}; check it with: histocam data check {out}")
