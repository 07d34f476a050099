"""Options and checks that several commands share."""

from __future__ import annotations

import typer

from histocam.core import progress

#: ``--quiet`` of every command that runs for more than a few seconds.
QUIET = typer.Option(False, "--quiet", "-q", help="no progress display (stages, bars, epoch "
                     "lines): only the results and errors")

#: Microns per pixel an option accepts: below any microscope's resolution to a millimetre a pixel.
MIN_MPP, MAX_MPP = 0.01, 1000.0
OUTSIDE_ROOT_HELP = ("read the paths of a CSV manifest that lie outside its folder (../x.png, "
                     "absolute paths)")
BATCH_HELP = ("images per batch (default: the largest that fits the evaluation memory budget, at "
              "most the run's train.eval_batch_size)")


def show_progress(quiet: bool) -> None:
    """The progress display of this command: bars on a terminal, log lines otherwise, none when
    ``quiet`` (``histocam.core.progress``)."""
    progress.configure(quiet=quiet)


def known_split(split: str) -> str:
    """``split`` if it is a split name, else a ValueError naming it and the split names."""
    from histocam.data.dataset import SPLITS

    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: not a split (one of {', '.join(SPLITS)})")
    return split
