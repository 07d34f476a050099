"""Many slides in one call, or split over processes, surviving bad files.

Sharding: ``--shard i/N`` (or torchrun's RANK/WORLD_SIZE) gives process i the slides i, i + N, ...
first; then it goes on with the others' slides that nobody has started. Each slide is taken with a
lock file ``STEM.lock`` in the output folder (the run directory's lock, ``core.runlock``), so two
processes never predict the same slide, whatever their shard settings, and a process that dies
leaves its slide to the next one (a dead owner's lock is stale). Images are shared out statically
(image i to process i mod N).

Bad files: with ``skip_errors`` (the default for a batch: several files, a folder or a manifest) a
slide or image that cannot be read becomes one failure, naming the file, and the batch goes on; a
configuration error (no scale for the run, an aggregation without a positive class) still stops it
before the first slide. I/O errors on the outputs are not a slide's fault and stop the batch.

``summary.csv`` (``summary-shard-I-of-N.csv`` per process when sharded), rewritten after each
file: ``file, kind, status, seconds, tiles, label, score, output, error`` for every input this
process handled: ``done``, ``already done``, ``failed``, ``skipped`` (not an image or slide),
``locked`` (its own slide, held by another live process).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

from histocam.core.runlock import RunLockError, acquire, holder, release
from histocam.data.errors import DataError
from histocam.predict.predictor import Predictor
from histocam.predict.slide import SlideOptions, predict_slide

SUMMARY_COLUMNS = ("file", "kind", "status", "seconds", "tiles", "label", "score", "output",
                   "error")


@dataclass
class Summary:
    """The rows of ``summary.csv``, written to ``path`` after each one."""

    path: Path
    rows: list[dict] = field(default_factory=list)

    def add(self, file: Path, kind: str, status: str, *, seconds: float | None = None,
            tiles: int | None = None, label: str | None = None, score: float | None = None,
            output: str = "", error: str = "") -> None:
        self.rows.append({"file": str(file), "kind": kind, "status": status,
                          "seconds": "" if seconds is None else f"{seconds:.1f}",
                          "tiles": "" if tiles is None else tiles, "label": label or "",
                          "score": "" if score is None else f"{score:.6g}", "output": output,
                          "error": error})
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(r["file"], r["error"]) for r in self.rows if r["status"] == "failed"]


def parse_shard(text: str) -> tuple[int, int]:
    """``i/N`` -> (i, N) with 0 ≤ i < N."""
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        index, count = -1, 0
    if len(parts) != 2 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: expected i/N with 0 ≤ i < N (e.g. 0/4)")
    return index, count


def shard_order(count: int, shard: tuple[int, int]) -> list[tuple[int, bool]]:
    """(slide index, whether it is this shard's own) in the order this process visits them: its
    own slides first, then the others' from the next shard on."""
    index, n = shard
    own = list(range(index, count, n))
    others = [k for s in range(1, n) for k in range((index + s) % n, count, n)]
    return [(k, True) for k in own] + [(k, False) for k in others]


def run_slides(predictor: Predictor, slides: list[Path], stems: list[str], out: Path,
               options: SlideOptions, summary: Summary, *, shard: tuple[int, int],
               skip_errors: bool, slide_args: dict) -> list[dict]:
    """Predict the slides (module docstring) into ``out/STEM/``; returns the summaries of the
    slides this process predicted or found done."""
    done = []
    for k, own in shard_order(len(slides), shard):
        path, stem = slides[k], stems[k]
        folder = out / stem
        lock = out / f"{stem}.lock"
        try:
            acquire(lock, f"prediction of {path.name}")
        except RunLockError as exc:
            if own:
                owner = holder(lock)
                summary.add(path, "slide", "locked", output=str(folder),
                            error=f"in progress elsewhere: {owner.describe()} ({lock})"
                            if owner is not None else str(exc))
            continue
        try:
            if not own and (folder / f"{stem}.json").is_file():
                continue  # another process's slide, finished: its summary lists it
            started = time.perf_counter()
            try:
                result = predict_slide(predictor, path, folder, stem, options, **slide_args)
            except DataError as exc:
                if not skip_errors:
                    raise
                summary.add(path, "slide", "failed", seconds=time.perf_counter() - started,
                            output=str(folder), error=" ".join(str(exc).split()))
                continue
            summary.add(path, "slide", "already done" if result.get("skipped") else "done",
                        seconds=time.perf_counter() - started, tiles=result.get("tiles"),
                        label=result.get("label"), score=result.get("score"), output=str(folder))
            done.append(result)
        finally:
            release(lock)
    return done
