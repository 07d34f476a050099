"""``histocam data ...`` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from histocam.cli.errors import user_errors
from histocam.data.check import CheckReport, check_source
from histocam.data.config import DataConfig
from histocam.data.dataset import SPLITS

data_app = typer.Typer(help="Inspect, validate and generate datasets.", no_args_is_help=True)
console = Console(width=120) if not Console().is_terminal else Console()


def known_split(split: str) -> str:
    """``split`` if it is a split name, else a ValueError naming it and the split names."""
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: not a split (one of {', '.join(SPLITS)})")
    return split


def print_report(report: CheckReport) -> None:
    """Summary tables (counts, sizes, mask coverage) followed by every problem found."""
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
) -> None:
    """Validate a dataset: summary per split and class, and every problem found."""
    from histocam.data.open import open_source

    for name in split or []:
        known_split(name)
    try:
        config = DataConfig(dataset=path, root=root, split_seed=seed,
                            classes=classes.split(",") if classes else None)
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
    size: int = typer.Option(256, help="tile size"),
    n_train: int = typer.Option(240),
    n_valcl: int = typer.Option(40),
    n_test: int = typer.Option(120),
    stain_shift: float = typer.Option(0.0, help="0 = source stain; higher = further away"),
) -> None:
    """Write a synthetic H&E dataset to disk in the same layout as real data."""
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
    write_synthetic(domain, out, config, progress=True)
    console.print(f"wrote synthetic-{domain} to {out}; check it with: histocam data check {out}")


@data_app.command("gallery")
@user_errors
def gallery(
    dataset: str = typer.Argument(..., help="dataset name or path"),
    out: Path = typer.Option(..., help="PNG file to write"),
    split: str = typer.Option("train"),
    n: int = typer.Option(16, help="number of samples (alternating classes)"),
    root: Path | None = typer.Option(None, help="image root for WSOL split lists"),
) -> None:
    """Save a contact sheet of samples with their mask outlines."""
    from histocam.data.gallery import save_gallery
    from histocam.data.open import open_dataset

    known_split(split)
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; --out takes the PNG file to write")
    save_gallery(open_dataset(DataConfig(dataset=dataset, root=root), split), out, n=n,
                 title=f"{dataset} ({split})")
    console.print(f"wrote {out}")
