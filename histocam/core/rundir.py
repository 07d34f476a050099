"""Every path of a run directory, named in this one module (docs/ARCHITECTURE.md, "Runs on disk").

```
RUN/.lock                    held by the process writing into the run (histocam.core.runlock)
RUN/config.yaml              the resolved RunConfig
RUN/log.csv                  one row per epoch (a copy of the rows that last.pt holds)
RUN/checkpoints/NAME.pt      best-loc, best-cl, last (atomic; weights-only loading)
RUN/checkpoints/resume.pt    mid-epoch state for --resume
RUN/cams/CKPT-SPLIT.npz      stored low-resolution maps (+ .json provenance)
RUN/metrics/[TAG/]CKPT-SPLIT.json, -per-image.csv, -curves.csv, -curves.png, -maps.npz
RUN/metrics/EXPERIMENT.json  stain-shift, tsne, thresholds
```

``RunDir`` hands out these paths and reads and writes the run's own formats (the log, the typed
evaluation results); ``core/studydirs.py`` does the same for the folders made of runs (a
pipeline's, a cross-validation's, an ensemble's). Nothing else in histocam spells a run's file
name.

**An epoch is committed by one write: ``last.pt``.** It holds, besides the weights and the
optimiser, every log row so far and the names of the checkpoints the epoch selected;
``commit_epoch`` writes it first, then the selected checkpoints and ``log.csv``, which are both
functions of it. ``recover`` (at ``--resume``) rewrites from ``last.pt`` whatever a kill left
unwritten: a selected checkpoint of an older epoch, a log missing its last row. A kill before
``last.pt`` is whole leaves the previous epoch's files (the epoch is trained again); a kill after
it is finished by ``recover``; a kill inside an atomic write leaves a temporary file, which
``remove_temporaries`` deletes. No file of a committed epoch is ever newer than its ``last.pt``.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from histocam.core.atomic import load_checkpoint, save_checkpoint, write_text_atomic
from histocam.core.results import EvaluationResult, read_per_image, write_per_image
from histocam.core.runlock import RunLock

#: The checkpoints a run keeps: B-LOC (valpx PxAP), B-CL (valcl accuracy) and the last epoch's.
CHECKPOINTS = ("best-loc", "best-cl", "last")
#: The selected checkpoints (the seed papers' model selection).
SELECTED = ("best-loc", "best-cl")
LABEL = {"best-loc": "B-LOC", "best-cl": "B-CL", "last": "last"}
RESUME = "resume"
#: What a selected checkpoint (B-LOC, B-CL) holds: the part of the epoch's ``last.pt`` it is.
SELECTED_KEYS = ("model", "epoch", "metrics", "config", "class_names")
Experiment = Literal["stain-shift", "tsne", "thresholds"]
EXPERIMENTS: tuple[Experiment, ...] = ("stain-shift", "tsne", "thresholds")


class RunError(ValueError):
    """A run directory that is missing, incomplete or unreadable."""


def check_checkpoint_name(name: str) -> None:
    """RunError unless ``name`` is one of ``CHECKPOINTS``."""
    if name not in CHECKPOINTS:
        raise RunError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {name!r}")


@dataclass(frozen=True)
class EvaluationFiles:
    """The files of one evaluation (one checkpoint on one split of one dataset)."""

    json: Path
    per_image: Path
    curves_csv: Path
    curves_png: Path
    maps: Path

    @classmethod
    def named(cls, folder: Path, stem: str) -> EvaluationFiles:
        """The files ``folder/STEM.json``, ``STEM-per-image.csv``, ``STEM-curves.csv``,
        ``STEM-curves.png`` and ``STEM-maps.npz``."""
        return cls(*(folder / f"{stem}{suffix}" for suffix in (
            ".json", "-per-image.csv", "-curves.csv", "-curves.png", "-maps.npz")))

    def write(self, result: EvaluationResult) -> Path:
        """The result's rows per image, then the result (its JSON last: an evaluation whose JSON
        exists is complete)."""
        write_per_image(self.per_image, result.per_image)
        return result.write(self.json)

    def read(self) -> EvaluationResult | None:
        """The stored evaluation with its rows per image, None when there is none."""
        result = EvaluationResult.read(self.json)
        if result is None:
            return None
        return result.model_copy(update={"per_image": read_per_image(self.per_image)})


class RunDir:
    """The directory of one run: its paths, its log, its checkpoints and its results."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    # ------------------------------------------------------------------ lock and contents
    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def lock(self, operation: str) -> RunLock:
        """``with run.lock("training"):`` this process alone writes into the run
        (``histocam.core.runlock``; under torchrun rank 0 takes it for the job)."""
        return RunLock(self.lock_file, operation)

    def results(self) -> list[Path]:
        """What the run has made: checkpoints, log, evaluations, stored maps. A ``config.yaml``
        alone is not a result (a run that stopped before its first evaluation ended)."""
        made = sorted(self.checkpoint("last").parent.glob("*.pt"))
        return made + [p for p in (self.log, self.metrics_dir(), self.cams_dir) if p.exists()]

    def remove_results(self) -> None:
        """Delete the run's own files (checkpoints, log, evaluations, stored maps, config), as
        ``--overwrite`` does; other files in the folder are left alone."""
        for folder in (self.checkpoint("last").parent, self.metrics_dir(), self.cams_dir):
            if folder.is_dir():
                shutil.rmtree(folder)
        self.log.unlink(missing_ok=True)
        self.config.unlink(missing_ok=True)

    def remove_temporaries(self) -> list[Path]:
        """Delete what interrupted writes left (``.NAME.*.tmp`` of atomic writes, ``.NAME.part*``
        of sharded stores); only the lock's holder may, as no other process writes then."""
        left = [p for pattern in (".*.tmp", ".*.part*-of-*") for p in self.root.rglob(pattern)
                if p.is_file()]
        for path in left:
            path.unlink(missing_ok=True)
        return left

    # ------------------------------------------------------------------ config and log
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def is_run(self) -> bool:
        """The folder holds a run (its resolved config)."""
        return self.config.is_file()

    def write_config(self, text: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(self.config, text)

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    def read_log(self) -> list[dict[str, str]]:
        """The training log's rows (strings, as written); [] before the first epoch."""
        if not self.log.is_file():
            return []
        with self.log.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def epochs_done(self) -> int:
        """The last epoch in the log; -1 before the first evaluation."""
        return max((int(r["epoch"]) for r in self.read_log()), default=-1)

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        """Write the log of ``rows`` (floats with 6 significant digits); a column that appears
        later is added to the header, earlier rows leave it empty."""
        write_text_atomic(self.log, _log_text(rows))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, name: str) -> Path:
        """``checkpoints/NAME.pt`` for NAME in ``CHECKPOINTS`` or ``RESUME``."""
        if name != RESUME:
            check_checkpoint_name(name)
        return self.root / "checkpoints" / f"{name}.pt"

    @property
    def resume_state(self) -> Path:
        return self.checkpoint(RESUME)

    def has_checkpoint(self, name: str) -> bool:
        return self.checkpoint(name).is_file()

    def is_trained(self) -> bool:
        """Both selected checkpoints (B-LOC and B-CL) exist."""
        return all(self.has_checkpoint(c) for c in SELECTED)

    def has_started(self) -> bool:
        """An epoch has ended (``last.pt`` exists): the run can be resumed, never restarted."""
        return self.has_checkpoint("last")

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        return save_checkpoint(state, self.checkpoint(name))

    def load_checkpoint(self, name: str, device: Any = "cpu",
                        needs: tuple[str, ...] = ()) -> dict[str, Any]:
        """The checkpoint's state, holding at least ``needs`` (else a ``CheckpointError``)."""
        return load_checkpoint(self.checkpoint(name), device, needs)

    def remove_resume_state(self) -> None:
        self.resume_state.unlink(missing_ok=True)

    def commit_epoch(self, state: dict[str, Any], selected: list[str]) -> None:
        """Write an ended epoch: ``last.pt`` (``state``, holding ``log``, every row so far, and
        ``selected``; the commit), then the ``selected`` checkpoints and the log derived from it,
        then drop the mid-epoch state, now older than ``last.pt``."""
        self.save_checkpoint("last", {**state, "selected": list(selected)})
        for name in selected:
            self.save_checkpoint(name, {k: state[k] for k in SELECTED_KEYS})
        self.write_log(state["log"])
        self.remove_resume_state()

    def recover(self, state: dict[str, Any]) -> None:
        """Finish the commit of ``last.pt``'s epoch (``state``) after a kill: rewrite each
        checkpoint it selected that holds an older epoch, the log from its rows, and remove the
        temporary files of interrupted writes. Only the lock's holder may call it."""
        self.remove_temporaries()
        for name in state["selected"]:
            if (not self.has_checkpoint(name)
                    or self.load_checkpoint(name)["epoch"] != state["epoch"]):
                self.save_checkpoint(name, {k: state[k] for k in SELECTED_KEYS})
        text = _log_text(state["log"])
        if not self.log.is_file() or self.log.read_bytes() != text.encode():
            write_text_atomic(self.log, text)

    # ------------------------------------------------------------------ stored maps
    def stored_maps(self, checkpoint: str, split: str) -> Path:
        """The CAM store of ``checkpoint``'s maps of ``split`` (``histocam cams``); its provenance
        is the ``.json`` beside it (``histocam.maps.store``)."""
        self.checkpoint(checkpoint)
        return self.cams_dir / f"{checkpoint}-{split}.npz"

    @property
    def cams_dir(self) -> Path:
        return self.root / "cams"

    @staticmethod
    def holding(store: str | Path) -> RunDir:
        """The run directory that holds the CAM store ``store`` (``stored_maps``)."""
        return RunDir(Path(store).parent.parent)

    # ------------------------------------------------------------------ evaluations
    def metrics_dir(self, tag: str | None = None) -> Path:
        """Where evaluations go: the run's own data, or ``metrics/TAG`` for other data."""
        return self.root / "metrics" / (tag or "")

    def evaluation(self, checkpoint: str, split: str = "test", tag: str | None = None
                   ) -> EvaluationFiles:
        self.checkpoint(checkpoint)
        return EvaluationFiles.named(self.metrics_dir(tag), f"{checkpoint}-{split}")

    def read_evaluation(self, checkpoint: str, split: str = "test", tag: str | None = None
                        ) -> EvaluationResult | None:
        """The stored evaluation with its rows per image, None when there is none."""
        return self.evaluation(checkpoint, split, tag).read()

    def write_evaluation(self, result: EvaluationResult, tag: str | None = None) -> Path:
        """The result's rows per image, then the result (``EvaluationFiles.write``)."""
        return self.evaluation(result.checkpoint, result.split, tag).write(result)

    def evaluation_is_current(self, checkpoint: str, split: str = "test") -> bool:
        """The evaluation exists and is newer than its checkpoint (not made before a retrain or
        a resume)."""
        json_path, weights = self.evaluation(checkpoint, split).json, self.checkpoint(checkpoint)
        if not json_path.is_file():
            return False
        return not weights.is_file() or json_path.stat().st_mtime >= weights.stat().st_mtime

    def other_data_tags(self) -> list[str]:
        """The tags of the evaluations on other data, in name order."""
        root = self.metrics_dir()
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def tau_star(self, checkpoint: str) -> tuple[float | None, str]:
        """(τ* of ``checkpoint``, the file it was read from), or (None, why there is none).

        τ* is chosen on valpx by ``histocam evaluate`` and is the same whatever split was
        evaluated; the test evaluation is read first. An evaluation older than the checkpoint
        is not used."""
        weights = self.checkpoint(checkpoint)
        prefix = f"{checkpoint}-"
        root = self.metrics_dir()
        names = sorted((p.name for p in root.glob(f"{prefix}*.json")) if root.is_dir() else [],
                       key=lambda n: (n != f"{prefix}test.json", n))
        stale = False
        for name in names:
            path = root / name
            try:
                result = EvaluationResult.read(path)
            except (OSError, ValueError):
                continue
            if result is None or result.tau_star is None:
                continue
            if weights.is_file() and path.stat().st_mtime < weights.stat().st_mtime:
                stale = True
                continue
            return result.tau_star, str(path)
        if stale:
            return None, (f"the evaluations in {root} are older than {weights.name}; run "
                          f"`histocam evaluate {self.root} --checkpoint {checkpoint}` again")
        return None, (f"no τ* recorded for {checkpoint} in {root} (run `histocam evaluate "
                      f"{self.root} --checkpoint {checkpoint}`, or pass --threshold)")

    # ------------------------------------------------------------------ experiments
    def experiment(self, name: Experiment) -> Path:
        """The result of a robustness experiment (``histocam stain-shift``, ``tsne``,
        ``thresholds``) on this run."""
        if name not in EXPERIMENTS:
            raise RunError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {name!r}")
        return self.metrics_dir() / f"{name}.json"


def _log_text(rows: list[dict[str, Any]]) -> str:
    rows = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            for row in rows]
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def runs_in(path: str | Path) -> list[RunDir]:
    """``path`` as a run, or the runs directly inside it in name order (a pipeline's folder);
    RunError when it is neither."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    if RunDir(path).is_run():
        return [RunDir(path)]
    inner = [RunDir(p) for p in sorted(path.iterdir()) if RunDir(p).is_run()]
    if not inner:
        raise RunError(f"{path}: not a run directory (no {RunDir(path).config.name}) and holds no "
                       "runs")
    return inner
