"""What a run directory holds, read once for the report: config, training log, test evaluations at
both selected checkpoints (results, per-image rows, threshold curves), evaluations on other data
and the experiments' results. Nothing is recomputed here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from histocam.core.experiment_results import StainShiftResult, ThresholdsResult, TsneResult
from histocam.core.results import EvaluationResult, PerImageRow
from histocam.core.rundir import SELECTED, RunDir, runs_in
from histocam.metrics.localization import ThresholdCurves, read_threshold_curves
from histocam.runs.run import Run


@dataclass
class CheckpointResults:
    checkpoint: str
    result: EvaluationResult
    per_image: list[PerImageRow]
    curves: ThresholdCurves | None
    maps: Path | None  # stored maps of the evaluation (``--save-maps``), when present

    @property
    def tau_star(self) -> float | None:
        return self.result.tau_star

    def scores(self, key: str = "ap") -> dict[str, float]:
        """image id -> per-image score (NaN where undefined or absent)."""
        return {r.id: r.score(key) for r in self.per_image}


@dataclass
class OtherData:
    tag: str
    checkpoint: str
    result: EvaluationResult


@dataclass
class Experiments:
    """The robustness experiments stored with a run (None: not run)."""

    stain_shift: StainShiftResult | None = None
    tsne: TsneResult | None = None
    thresholds: ThresholdsResult | None = None


@dataclass
class RunResults:
    run: Run
    config_text: str
    log: list[dict[str, str]]
    test: dict[str, CheckpointResults] = field(default_factory=dict)
    other_data: list[OtherData] = field(default_factory=list)
    experiments: Experiments = field(default_factory=Experiments)

    @property
    def name(self) -> str:
        return self.run.dir.name

    @property
    def method(self) -> str:
        return self.run.config.method.name

    @property
    def teacher_dir(self) -> Path | None:
        """The run whose stored maps this run learnt from (a seeded student's teacher), if any."""
        cams = self.run.config.cams
        return RunDir.holding(cams).root if cams is not None else None

    def selected_epoch(self, which: str) -> int | None:
        """The epoch selected as B-LOC or B-CL: the last log row that saved it."""
        found = None
        for row in self.log:
            if which in (row.get("selected") or "").split("+"):
                found = int(row["epoch"])
        return found


def load_results(directory: str | Path, split: str = "test") -> RunResults:
    run = Run(directory)
    files = run.dir
    results = RunResults(run, files.config.read_text(), files.read_log())
    for ckpt in SELECTED:
        result = files.read_evaluation(ckpt, split)
        if result is None:
            continue
        evaluation = files.evaluation(ckpt, split)
        results.test[ckpt] = CheckpointResults(
            ckpt, result, result.per_image,
            read_threshold_curves(evaluation.curves_csv),
            evaluation.maps if evaluation.maps.is_file() else None)
    for tag in files.other_data_tags():
        for ckpt in SELECTED:
            other = files.read_evaluation(ckpt, split, tag)
            if other is not None:
                results.other_data.append(OtherData(tag, ckpt, other))
    results.experiments = Experiments(
        stain_shift=StainShiftResult.read(files.experiment("stain-shift")),
        tsne=TsneResult.read(files.experiment("tsne")),
        thresholds=ThresholdsResult.read(files.experiment("thresholds")))
    return results


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``; a folder that is not a run but holds runs (a pipeline's
    root, e.g. the demo's) stands for its runs, in name order."""
    return [run.root for path in paths for run in runs_in(path)]
