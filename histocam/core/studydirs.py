"""The folders made of runs, with every path in them: a pipeline's (``PipelineDir``: teacher ->
student), a cross-validation's (``CrossvalDir``: one run or pipeline per fold and seed) and an
ensemble's (``EnsembleDir``: the mean map of several runs). With ``core/rundir.py``, the only
module that spells the file names of what histocam writes (docs/ARCHITECTURE.md, "Runs on disk").

```
PIPELINE/pipeline.yaml, comparison.json, comparison.md, figures/maps.png, report.html
PIPELINE/teacher-METHOD/, METHOD-TEACHER/      the runs (RunDir)
CV/fold<f>-s<seed>/                            a run or pipeline per fold and seed
CV/mean-map-fold<f>-s<seeds>/<role>/           with --mean-map: an ensemble per fold and role
CV/crossval.json, crossval.md                  the summary
ENSEMBLE/.lock, members.json, metrics/CKPT-SPLIT.json, ...   (EnsembleDir)
```
"""

from __future__ import annotations

import json
from pathlib import Path

from histocam.core.atomic import write_text_atomic
from histocam.core.results import EvaluationResult
from histocam.core.rundir import EvaluationFiles, RunDir, RunError, check_checkpoint_name
from histocam.core.runlock import RunLock


class PipelineDir:
    """The folder of a pipeline (``histocam pipeline pixelcam``): its config, its runs and the
    comparison of the teacher with its student."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    @property
    def config(self) -> Path:
        return self.root / "pipeline.yaml"

    @property
    def comparison_json(self) -> Path:
        return self.root / "comparison.json"

    @property
    def comparison_md(self) -> Path:
        return self.root / "comparison.md"

    @property
    def maps_figure(self) -> Path:
        return self.root / "figures" / "maps.png"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def teacher(self, method: str) -> RunDir:
        return RunDir(self.root / f"teacher-{method}")

    def student(self, method: str, teacher_method: str) -> RunDir:
        return RunDir(self.root / f"{method}-{teacher_method}")


class CrossvalDir:
    """The folder of a cross-validation (``histocam crossval``): one run or pipeline folder per
    fold and seed, with ``--mean-map`` one ensemble folder per fold, seed set and role, and the
    summary as JSON and as a markdown table."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def fold(self, fold: int, seed: int) -> Path:
        """The run (or pipeline) folder of ``fold`` trained with ``seed``."""
        return self.root / f"fold{fold}-s{seed}"

    def folds(self) -> list[Path]:
        """The fold folders present, in name order."""
        return sorted(p for p in self.root.glob("fold*-s*") if p.is_dir())

    def mean_map(self, fold: int, seeds: list[int], role: str) -> Path:
        """The ensemble folder (``EnsembleDir``) of the mean map of ``fold``'s runs of ``role``
        (``model``, ``teacher``, ``student``) trained with ``seeds``."""
        return self.root / f"mean-map-fold{fold}-s{','.join(map(str, seeds))}" / role

    @property
    def summary_json(self) -> Path:
        return self.root / "crossval.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "crossval.md"


class EnsembleDir:
    """The folder of an ensemble (``histocam ensemble``): the runs whose maps it averages and, per
    checkpoint and split, the evaluation of their mean map under a run's file names.

    ```
    OUT/.lock                      held by the process writing into it
    OUT/members.json               the member runs (absolute paths, in the order given)
    OUT/metrics/CKPT-SPLIT.json, -per-image.csv, -curves.csv, -curves.png, -maps.npz
    ```

    A folder belongs to one set of runs: ``claim`` writes ``members.json`` into a new or empty
    folder and refuses a folder that holds anything else, so an ensemble never writes over a run,
    another ensemble or a user's files.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def lock(self, operation: str) -> RunLock:
        """``with ensemble.lock("evaluation"):`` this process alone writes into the folder."""
        return RunLock(self.lock_file, operation)

    @property
    def members(self) -> Path:
        return self.root / "members.json"

    def read_members(self) -> list[str] | None:
        """The member runs, or None when the folder holds no ensemble."""
        if not self.members.is_file():
            return None
        try:
            runs = json.loads(self.members.read_text())["runs"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RunError(f"{self.members}: not an ensemble's member list ({exc}); move the "
                           "folder away") from None
        return [str(r) for r in runs]

    def claim(self, runs: list[Path]) -> None:
        """Make the folder the ensemble of ``runs``, or check that it is; RunError when it holds
        another ensemble or files that are not an ensemble's."""
        wanted = [str(Path(r).resolve()) for r in runs]
        found = self.read_members()
        if found is None:
            if self.root.exists() and (not self.root.is_dir() or any(
                    p.name != self.lock_file.name for p in self.root.iterdir())):
                raise RunError(f"{self.root}: exists and is not an ensemble's folder; give a new "
                               "or empty folder as --out")
            self.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.members, json.dumps({"runs": wanted}, indent=2) + "\n")
        elif sorted(found) != sorted(wanted):
            raise RunError(f"{self.root}: holds the ensemble of other runs ({', '.join(found)}); "
                           "give another --out")

    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def evaluation(self, checkpoint: str, split: str = "test") -> EvaluationFiles:
        check_checkpoint_name(checkpoint)
        return EvaluationFiles.named(self.metrics_dir(), f"{checkpoint}-{split}")

    def read_evaluation(self, checkpoint: str, split: str = "test") -> EvaluationResult | None:
        """The stored evaluation with its rows per image, None when there is none."""
        return self.evaluation(checkpoint, split).read()

    def write_evaluation(self, result: EvaluationResult) -> Path:
        return self.evaluation(result.checkpoint, result.split).write(result)
