"""``histocam evaluate``, ``histocam ensemble`` and ``histocam score-maps``: a table for a person,
``--json`` for a program."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from histocam.cli.common_options import (
    BATCH_HELP,
    OUTSIDE_ROOT_HELP,
    QUIET,
    known_split,
    show_progress,
)
from histocam.cli.user_errors import user_errors

if TYPE_CHECKING:
    from histocam.core.results import EvaluationResult, Localization
    from histocam.core.rundir import EvaluationFiles

AREA = ("TP*", "FN*", "FP*", "TN*")
READING = ("CL: accuracy (%); CL chance: always answering the most frequent class; PxAP chance: "
           "an all-ones map (the foreground share); TP*/FN*/FP*/TN*: pixel rates (%) averaged "
           "over thresholds")


def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain table on stdout, wide enough not to wrap in a log file."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=box.SIMPLE_HEAD, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    console.print(table)


def localization_cells(loc: Localization | None) -> list[str]:
    """PxAP, its chance, τ*, the area rates, and FG Dice at τ*."""
    if loc is None:
        return ["n/a"] * 8
    star = loc.at_tau_star_valpx
    return [number(loc.pxap), number(loc.chance), number(loc.tau_star_valpx, 3),
            *[number(v) for v in loc.area_rates.values()],
            number(star.dice_fg if star is not None else None)]


def data_in_words(result: EvaluationResult, tag: str | None) -> str:
    """Which data was evaluated and, on other data, how its classes meet the run's."""
    if tag is None or result.class_names is None:
        return f"data: {result.data} (the run's own)"
    names = result.class_names
    pairs = ", ".join(f"{r} = {d}" for r, d in zip(names.run, names.data))
    return (f"data: {result.data} (out of distribution, stored under the tag {tag}). Its classes "
            f"are matched to the run's by position, run class = data class: {pairs}. τ* comes "
            "from the run's own valpx images.")


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
    json_lines: bool = typer.Option(False, "--json", help="one JSON line per checkpoint instead "
                                    "of the table"),
    quiet: bool = QUIET,
) -> None:
    """Evaluate a trained run on a split; τ* is chosen on the run's valpx and applied to the split.
    On N processes: torchrun --nproc_per_node N -m histocam evaluate RUN (rank 0 writes)."""

    from histocam.core import collectives
    from histocam.data.config import DataConfig
    from histocam.runs import Run

    known_split(split)
    show_progress(quiet)
    r = Run(run)
    names = ["best-loc", "best-cl"] if checkpoint == "both" else [checkpoint]
    other = data
    if allow_outside_root:
        if data is None:
            raise ValueError("--allow-outside-root applies to the CSV manifest of --data; the "
                             "run's own data follows data.allow_outside_root of its config")
        other = DataConfig.model_validate({**r.data_config(data).model_dump(exclude_unset=True),
                                           "allow_outside_root": True})
    tag = r.data_tag(other)
    results = []
    for name in names:  # under torchrun: one process group, made by the first evaluation
        result = r.evaluate(name, split, data=other, device=device, save_maps=save_maps,
                            separability=separability, batch_size=batch_size)
        results.append(result)
        if json_lines and collectives.is_main():
            typer.echo(json_line(result))
    if json_lines or not collectives.is_main():
        return
    print_results(results, split)
    typer.echo(data_in_words(results[-1], tag))
    print_reading_and_files(results, [r.dir.evaluation(name, split, tag) for name in names],
                            save_maps)


def json_line(result: EvaluationResult) -> str:
    """One checkpoint's metrics as one JSON line."""
    import json

    summary = {"checkpoint": result.checkpoint, "data": result.data, "accuracy": result.accuracy}
    if result.localization is not None:
        loc = result.localization
        star = loc.at_tau_star_valpx
        summary.update({"pxap": loc.pxap, "chance": loc.chance, **loc.area_rates,
                        "tau_star_valpx": loc.tau_star_valpx,
                        "dice_fg_at_tau_star": star.dice_fg if star else None,
                        "iou_fg_at_tau_star": star.iou_fg if star else None})
    return json.dumps(summary)


def print_results(results: list[EvaluationResult], split: str, separability: bool = True
                  ) -> None:
    """The table of one evaluation per checkpoint (``separability``: with the column J), and a
    note per result that needs one."""
    from histocam.core.rundir import LABEL

    rows, notes = [], []
    for result in results:
        cl, label = result.classification, LABEL[result.checkpoint]
        j = result.separability.mean if result.separability is not None else None
        rows.append([label, number(cl.accuracy), number(cl.chance),
                     *localization_cells(result.localization),
                     *([number(j, 3)] if separability else [])])
        if cl.near_chance:
            notes.append(f"warning: {label} classifies near chance on {split} (CL "
                         f"{cl.accuracy:.1f}; always answering the most frequent class: "
                         f"{cl.chance:.1f}): its maps show little class evidence")
        if result.localization is None:
            notes.append(f"{label}: no {split} image has a mask: no localisation metrics")
    print_table(["selection", "CL", "CL chance", "PxAP", "PxAP chance", "τ* (valpx)", *AREA,
                 "Dice FG @τ*", *(["J"] if separability else [])], rows)
    for note in notes:
        typer.echo(note)


def print_reading_and_files(results: list[EvaluationResult], files: list[EvaluationFiles],
                            save_maps: bool) -> None:
    """How to read the table, and the files written."""
    typer.echo(READING + ".")
    typer.echo("wrote: " + ", ".join(str(f.json) for f in files) + " (each with its per-image CSV"
               + (" and threshold curves" if results[-1].localization is not None else "")
               + (" and maps" if save_maps else "") + ")")


@user_errors
def ensemble(
    runs: list[Path] = typer.Argument(..., help="two or more run directories trained on the same "
                                      "data (e.g. one config's seeds)"),
    out: Path = typer.Option(..., help="the ensemble's folder (new, or this ensemble's own)"),
    split: str = typer.Option("test"),
    checkpoint: str = typer.Option("best-loc", help="best-loc, best-cl, last or both: each run "
                                   "at its own checkpoint of that name"),
    save_maps: bool = typer.Option(False, help="also save the mean maps (float16 .npz)"),
    device: str = typer.Option("auto"),
    batch_size: int | None = typer.Option(None, min=1, help=BATCH_HELP),
    json_lines: bool = typer.Option(False, "--json", help="one JSON line per checkpoint instead "
                                    "of the table"),
    quiet: bool = QUIET,
) -> None:
    """Evaluate the mean map of several runs: each image's map is the mean of the runs' maps
    (min–max normalised again unless they are probabilities), its class probabilities the mean of
    theirs; τ* is chosen on the mean map of valpx. The runs are only read; the results go to
    --out."""
    from histocam.core import collectives
    from histocam.core.studydirs import EnsembleDir
    from histocam.runs import Run
    from histocam.runs.ensemble import evaluate_ensemble

    known_split(split)
    show_progress(quiet)
    members = [Run(r) for r in runs]
    names = ["best-loc", "best-cl"] if checkpoint == "both" else [checkpoint]
    results = [evaluate_ensemble(members, name, split, out, device=device, batch_size=batch_size,
                                 save_maps=save_maps) for name in names]
    if not collectives.is_main():
        return
    if json_lines:
        for result in results:
            typer.echo(json_line(result))
        return
    print_results(results, split, separability=False)
    typer.echo(f"data: {results[-1].data}; the mean map of {len(members)} runs: "
               + ", ".join(str(r) for r in runs) + ".")
    print_reading_and_files(results, [EnsembleDir(out).evaluation(n, split) for n in names],
                            save_maps)


@user_errors
def score_maps(
    maps_dir: Path = typer.Argument(..., help="folder of <id>.npy float maps in [0, 1]"),
    masks_dir: Path = typer.Argument(..., help="folder of <id>.png masks (missing = background)"),
    valpx_maps: Path | None = typer.Option(None, help="B-LOC maps: choose τ* here"),
    valpx_masks: Path | None = typer.Option(None, help="B-LOC masks"),
    size: int = typer.Option(224, min=1, help="evaluation size (protocol: 224)"),
    native: bool = typer.Option(False, help="evaluate at each mask's own size instead"),
    json_output: bool = typer.Option(False, "--json", help="every metric as JSON instead of the "
                                     "table"),
    quiet: bool = QUIET,
) -> None:
    """Score saved maps against masks per the protocol: a table (--json: every metric)."""
    from histocam.metrics.score_maps import score_map_dirs

    show_progress(quiet)
    report = score_map_dirs(maps_dir, masks_dir, valpx_maps, valpx_masks, None if native else size)
    if json_output:
        typer.echo(report.to_json())
        return
    star = report.at_tau_star_valpx
    print_table(["images", "PxAP", "PxAP chance", "τ* (valpx)", *AREA, "Dice FG @τ*", "IoU FG @τ*"],
                [[str(report.n_images), *localization_cells(report)[:7],
                  number(star.dice_fg if star else None), number(star.iou_fg if star else None)]])
    typer.echo(f"evaluated at {report.evaluated_at}; {READING[READING.index('PxAP chance'):]}"
               + ("" if star else "; no τ*: give --valpx-maps and --valpx-masks to choose it")
               + ". Nothing written; --json prints every metric.")
