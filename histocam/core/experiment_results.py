"""The typed results of the experiments built on runs, as the report and the benchmarks read them.

- ``StainShiftResult``: CL and PxAP of the test images re-stained at increasing strengths
  (``histocam stain-shift``; PixelCAM Figs. 4/5);
- ``TsneResult``: t-SNE of FG/BG pixel features with the separability J (``histocam tsne``;
  PixelCAM Figs. 19–24, App. D);
- ``ThresholdsResult``: share of pixels above each threshold against localisation (``histocam
  thresholds``; survey Fig. 8);
- ``PipelineComparison``: a teacher and its seeded student side by side (``histocam pipeline
  pixelcam``);
- ``CrossvalResult``: a config over group-disjoint folds × seeds (``histocam crossval``).
"""

from __future__ import annotations

import statistics
from typing import Any

from pydantic import Field

from histocam.core.results import NEAR_CHANCE_POINTS, PairedTest, Result, Separability


class StainShiftCurve(Result):
    """One checkpoint's CL, PxAP and chance level at each stain-shift level."""

    accuracy: list[float]
    pxap: list[float | None]
    chance: list[float | None]


class StainShiftResult(Result):
    definition: str
    split: str
    seed: int
    a: list[float]
    b: list[float]
    levels: list[int]
    strengths: list[float]
    checkpoints: dict[str, StainShiftCurve]


class TsneImage(Result):
    """One test image's feature-grid cells embedded in 2-D, with their FG labels and its J."""

    id: str
    label: int
    class_name: str = Field(alias="class")
    j: float
    points: list[list[float]]
    fg: list[int]


class TsneResult(Result):
    definition: str
    checkpoint: str
    split: str
    seed: int
    images: list[TsneImage]
    skipped_small_grid: int
    separability: Separability


class ThresholdSensitivity(Result):
    """At every 10th threshold: the share of pixels with a score ≥ τ (all, FG, BG), FG Dice and
    mIoU (percent), with the PxAP and τ* of the evaluation they come from."""

    omitted_when_none = ("share_all_at_tau_star",)

    thresholds: list[float]
    share_all: list[float]
    share_fg: list[float]
    share_bg: list[float]
    dice_fg: list[float]
    miou: list[float]
    share_all_at_half: float = Field(alias="share_all_at_0.5")
    pxap: float
    tau_star: float | None
    share_all_at_tau_star: float | None = None


class ThresholdsResult(Result):
    definition: str
    split: str
    checkpoints: dict[str, ThresholdSensitivity]


class CheckpointSummary(Result):
    """One checkpoint of one run of a pipeline on test: PxAP, chance, CL and its chance level
    (always the most frequent class), area rates, J and the per-image AP (image id -> AP, images
    with foreground)."""

    omitted_when_none = ("accuracy_chance",)

    pxap: float | None
    chance: float | None
    accuracy: float
    accuracy_chance: float | None = None
    tp_area: float | None = Field(alias="TP*")
    fn_area: float | None = Field(alias="FN*")
    fp_area: float | None = Field(alias="FP*")
    tn_area: float | None = Field(alias="TN*")
    separability: float | None
    per_image_ap: dict[str, float]

    @property
    def area_rates(self) -> dict[str, float | None]:
        return {"TP*": self.tp_area, "FN*": self.fn_area, "FP*": self.fp_area,
                "TN*": self.tn_area}

    @property
    def near_chance(self) -> bool:
        """CL within ``NEAR_CHANCE_POINTS`` of its chance level (``Classification.near_chance``)."""
        return self.accuracy_chance is not None and \
            self.accuracy < self.accuracy_chance + NEAR_CHANCE_POINTS


class InferenceCost(Result):
    """Milliseconds per image: a plain forward pass, and a forward pass with the map."""

    forward_ms: float
    forward_and_map_ms: float
    ratio: float


class RoleResults(Result):
    """The teacher's or the student's results at B-LOC and B-CL, its cost and its run."""

    best_loc: CheckpointSummary = Field(alias="best-loc")
    best_cl: CheckpointSummary = Field(alias="best-cl")
    cost: InferenceCost
    run: str

    def at(self, checkpoint: str) -> CheckpointSummary:
        """The summary at ``best-loc`` or ``best-cl``."""
        return {"best-loc": self.best_loc, "best-cl": self.best_cl}[checkpoint]


class PipelineComparison(Result):
    """A pipeline's comparison: the teacher, its student, and the paired t-test of
    their per-image AP at B-LOC (None with fewer than two shared images)."""

    teacher: RoleResults
    student: RoleResults
    teacher_method: str
    student_method: str
    paired_ttest_pxap_b_loc: PairedTest | None
    #: the teacher checkpoint whose maps gave the student's seeds
    teacher_maps: str = "best-loc"


class ClassSummary(Result):
    """One class of one evaluation: PxAP and chance on its images, mean per-image AP and mean
    foreground percentage (``ClassLocalization`` without the image count)."""

    pxap: float
    chance: float
    mean_image_ap: float | None
    mean_fg_fraction: float | None


class FoldCheckpoint(Result):
    """One checkpoint of one model of one fold and seed on that fold's test split."""

    pxap: float | None
    chance: float | None
    accuracy: float
    per_class: dict[str, ClassSummary]
    per_image_ap: dict[str, float]


class PipelineMethods(Result):
    teacher: str
    student: str


class FoldRun(Result):
    """One fold and seed: a run config's model (B-LOC, B-CL, last), or a pipeline's teacher and
    student (B-LOC, B-CL) with their methods; each by checkpoint name. ``dirs``: each role's run
    directory."""

    omitted_when_none = ("model", "teacher", "student", "methods", "dirs")

    fold: int
    seed: int
    model: dict[str, FoldCheckpoint] | None = None
    teacher: dict[str, FoldCheckpoint] | None = None
    student: dict[str, FoldCheckpoint] | None = None
    methods: PipelineMethods | None = None
    dirs: dict[str, str] | None = None

    def role(self, name: str) -> dict[str, FoldCheckpoint]:
        """``model``, ``teacher`` or ``student``: its checkpoints."""
        found = {"model": self.model, "teacher": self.teacher, "student": self.student}[name]
        if found is None:
            raise KeyError(f"this fold's run has no {name}")
        return found


class FoldFloor(Result):
    """A fold's test split: the PxAP of an all-ones map and of the darkness map."""

    chance: float
    darkness: float


class FoldMeanMap(Result):
    """The mean map of one fold's seeds' runs of one role at B-LOC (``histocam ensemble``) on
    that fold's test split."""

    fold: int
    role: str
    result: FoldCheckpoint


class CrossvalResult(Result):
    """A cross-validation over group-disjoint folds × seeds (``histocam crossval``): the config,
    the floors of each fold's test split, every fold's run and, when asked, each fold's mean map
    of its seeds' runs."""

    omitted_when_none = ("mean_maps",)

    config: dict[str, Any]
    folds: int
    seeds: list[int]
    pipeline: bool
    floors: dict[int, FoldFloor]
    runs: list[FoldRun]
    mean_maps: list[FoldMeanMap] | None = None

    @property
    def roles(self) -> list[str]:
        return ["teacher", "student"] if self.pipeline else ["model"]

    def fold_means(self, role: str, checkpoint: str, key: str = "pxap") -> list[float]:
        """Per fold, the mean over its seeds of ``key`` (``pxap``, ``accuracy``) at
        ``checkpoint``."""
        return [statistics.mean(float(getattr(r.role(role)[checkpoint], key))
                                for r in self.runs if r.fold == f) for f in range(self.folds)]

    def class_means(self, role: str, checkpoint: str, class_name: str, key: str) -> list[float]:
        """Per fold, the mean over its seeds of one class's ``key``."""
        return [statistics.mean(float(getattr(r.role(role)[checkpoint].per_class[class_name], key))
                                for r in self.runs if r.fold == f) for f in range(self.folds)]
