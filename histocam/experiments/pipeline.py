"""The seeded-student pipeline: teacher -> stored CAMs -> PixelCAM or NEGEV -> evaluation of both.

The pipeline config composes the two runs: shared ``data``, ``backbone``, seed and device, and one
stage per run (``teacher: {method, train}``, ``student: {method, train, teacher_maps, init}``).
``run_pipeline`` trains the teacher (reused if its run already exists), exports its B-LOC CAMs on
train, trains the student (PixelCAM or NEGEV, its classifier the teacher's method) from the B-CL
teacher checkpoint, evaluates both at B-LOC and B-CL on test (τ* from valpx) and writes the
comparison (``PipelineComparison``, with the inference cost of each map) as JSON and as a markdown
table, and a figure of both maps on test images; where each goes is ``PipelineDir``'s.
Under torchrun every stage is distributed (one process group) and rank 0 alone writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

import torch
import yaml
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from histocam.core import collectives
from histocam.core.configs import StrictModel
from histocam.core.devices import command_device, resolve_device
from histocam.core.experiment_results import (
    CheckpointSummary,
    InferenceCost,
    PipelineComparison,
    RoleResults,
)
from histocam.core.progress import Stages
from histocam.core.results import PairedTest
from histocam.core.rundir import LABEL, SELECTED
from histocam.core.studydirs import PipelineDir
from histocam.data.config import DataConfig
from histocam.experiments.map_figure import save_map_figure
from histocam.methods.base import MethodConfig
from histocam.methods.catalog import method_config
from histocam.methods.composed import ComposedConfig
from histocam.methods.student import SeededStudentConfig
from histocam.models.backbones import BackboneConfig
from histocam.runs.run import Run
from histocam.train.config_errors import validate_config
from histocam.train.run_config import (
    RESUMABLE_KEYS,
    RunConfig,
    RunIdentity,
    TrainConfig,
    tree_changes,
)


class StageConfig(StrictModel):
    """One training stage of the pipeline: a method and how it is trained (with the pipeline's
    data, backbone, seed and device, this is a whole ``RunConfig``)."""

    default_method: ClassVar[str] = "cam"
    method: SerializeAsAny[MethodConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("method", mode="before")
    @classmethod
    def _parse_method(cls, value):
        if isinstance(value, dict) and "name" not in value:  # e.g. student.method.n=10 alone
            value = {"name": cls.default_method, **value}
        method = method_config(value)
        if method.backbone != BackboneConfig():
            raise ValueError("the teacher and the student share the pipeline's backbone: set "
                             "backbone, not the stage method's backbone")
        return method


class TeacherStage(StageConfig):
    method: SerializeAsAny[MethodConfig] = Field(default_factory=lambda: method_config("cam"))


class StudentStage(StageConfig):
    default_method: ClassVar[str] = "pixelcam"
    method: SerializeAsAny[MethodConfig] = Field(
        default_factory=lambda: method_config("pixelcam"),
        description="a seeded student (pixelcam, negev); its classifier is the teacher's method")
    teacher_maps: Literal["best-loc", "best-cl"] = Field(
        "best-loc", description="the teacher checkpoint whose maps give the seeds")
    init: Literal["teacher", "backbone"] = Field(
        "teacher", description="teacher: start from the teacher's B-CL checkpoint; backbone: from "
        "the backbone's own initialisation (ImageNet weights or scratch)")

    @field_validator("method", mode="after")
    @classmethod
    def _a_student(cls, method):
        if not isinstance(method, SeededStudentConfig):
            raise ValueError(f"the student must be a seeded student method (pixelcam, negev), not "
                             f"{method.name!r}")
        if method.classifier != method_config("cam"):
            raise ValueError("the student's classifier is the teacher's method: set "
                             "teacher.method, not student.method.classifier")
        return method


class PipelineConfig(RunIdentity):
    """Teacher -> stored maps -> seeded student, with one data, backbone, seed and device."""

    name: str = "pixelcam"
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    teacher: TeacherStage = Field(default_factory=TeacherStage)
    student: StudentStage = Field(default_factory=StudentStage)
    teacher_run: Path | None = Field(None, description="use this trained teacher run instead of "
                                     "training the teacher stage")

    @model_validator(mode="after")
    def _teacher_once(self) -> PipelineConfig:
        if self.teacher_run is not None and self.teacher != TeacherStage():
            raise ValueError("teacher_run replaces the teacher stage: remove the teacher section")
        return self

    @property
    def root(self) -> Path:
        return self.out_dir / self.name

    def changes_from(self, saved: PipelineConfig) -> list[str]:
        """``key: old -> new`` for each setting that changes the pipeline's runs: every key but
        ``device`` and each stage's resumable training keys (``RESUMABLE_KEYS``), none of which
        changes the weights, so a finished pipeline differing only in them is this one's."""
        allowed = ("device", *(f"{stage}.{key}" for stage in ("teacher", "student")
                               for key in RESUMABLE_KEYS if key.startswith("train.")))
        return tree_changes(saved.model_dump(mode="json"), self.model_dump(mode="json"), allowed)


def load_pipeline_config(path: str | Path | None = None,
                         overrides: list[str] | None = None) -> PipelineConfig:
    return validate_config(PipelineConfig, path, overrides)


def teacher_run_config(p: PipelineConfig) -> RunConfig:
    teacher = p.teacher.method.model_copy(update={"backbone": p.backbone})
    run_dir = PipelineDir(p.root).teacher(teacher.name)
    return RunConfig(name=run_dir.name, out_dir=p.root, seed=p.seed,
                     deterministic=p.deterministic, device=p.device, data=p.data, method=teacher,
                     train=p.teacher.train)


def student_run_config(p: PipelineConfig, teacher: Run) -> RunConfig:
    """The student's run: the teacher's method as its classifier, the teacher's maps as seeds."""
    s = p.student
    classifier = teacher.config.method
    if isinstance(classifier, ComposedConfig):  # a top-down teacher: its classifier
        classifier = classifier.classifier
    method = s.method.around(classifier, p.backbone)
    run_dir = PipelineDir(p.root).student(method.name, teacher.config.method.name)
    return RunConfig(
        name=run_dir.name, out_dir=p.root, seed=p.seed,
        deterministic=p.deterministic, device=p.device, data=p.data, method=method,
        train=s.train, cams=teacher.dir.stored_maps(s.teacher_maps, "train"),
        init=teacher.checkpoint_path("best-cl") if s.init == "teacher" else None)


def inference_cost(run: Run, data: DataConfig, device: str, batch: int = 8,
                   repeats: int = 3) -> InferenceCost:
    """Milliseconds per image: plain forward, and forward + map of the run's method."""
    dev = resolve_device(device)
    method, _ = run.method("best-loc", str(dev))
    x = torch.randn(batch, 3, data.eval_size, data.eval_size, device=dev)
    y = torch.zeros(batch, dtype=torch.long, device=dev)

    def timed(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return 1000 * best / batch

    with torch.no_grad():  # top-down CAMs re-enable the gradients they need
        forward = timed(lambda: method(x))
        mapped = timed(lambda: method.localize_with_logits(x, y))
    return InferenceCost(forward_ms=forward, forward_and_map_ms=mapped, ratio=mapped / forward)


#: The pipeline's stages (``run_pipeline`` shows them as ``[i/n] ...``).
PIPELINE_STAGES = 4


def run_pipeline(p: PipelineConfig, progress: bool = True,
                 stages: Stages | None = None) -> PipelineComparison:
    """The whole pipeline; returns the comparison (on every rank).

    Its ``PIPELINE_STAGES`` stages are shown as ``[i/n] ...`` lines (``histocam.core.progress``),
    numbered by ``stages`` (a caller that adds stages of its own, such as the demo, passes its
    ``Stages``); ``progress=False`` leaves out the per-image bars of the map export.

    Under torchrun every stage runs on all the ranks in one process group (this call's, or the
    caller's when it has one): the trainings are data-parallel, the map export and the evaluations
    share the images out over the ranks, and rank 0 alone writes the pipeline's config and the
    comparison files and figure (the other ranks wait for it at barriers). One process group for
    the whole pipeline: made here (or the caller's), joined by every stage."""
    collectives.setup(command_device(p.device))
    folder = PipelineDir(p.root)
    if collectives.is_main():
        folder.root.mkdir(parents=True, exist_ok=True)
        folder.config.write_text(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
    collectives.barrier()
    stages = stages or Stages(PIPELINE_STAGES)
    if p.teacher_run is not None:  # used as it is: never trained here
        teacher = Run(p.teacher_run).require_trained()
        stages.next(f"teacher: {teacher.dir} (given, not trained here)")
    else:
        config = teacher_run_config(p)
        stages.next(_training(config, f"training the teacher ({config.method.name})"))
        teacher = Run.train(config)
    stages.next(f"exporting the teacher's {LABEL[p.student.teacher_maps]} maps of the training "
                "images (the student's seeds)")
    teacher.stored_maps(p.student.teacher_maps, device=p.device, progress=progress)
    config = student_run_config(p, teacher)
    label = STUDENT_LABELS.get(config.method.name, config.method.name)
    stages.next(_training(config, f"training {label} from the teacher's maps"))
    student = Run.train(config)
    stages.next("evaluating the teacher and the student on test (B-LOC and B-CL)")
    summaries = {role: {ckpt: _summary(run, ckpt, p.device) for ckpt in SELECTED}
                 for role, run in (("teacher", teacher), ("student", student))}
    comparison = None
    if collectives.is_main():  # timings and files: rank 0 alone, the others wait
        roles = {role: RoleResults(**{"best-loc": summaries[role]["best-loc"],
                                      "best-cl": summaries[role]["best-cl"]},
                                   cost=inference_cost(run, p.data, p.device), run=str(run.dir))
                 for role, run in (("teacher", teacher), ("student", student))}
        comparison = PipelineComparison(
            **roles, teacher_method=teacher.config.method.name,
            student_method=student.config.method.name,
            paired_ttest_pxap_b_loc=_ttest(roles["teacher"], roles["student"]),
            teacher_maps=p.student.teacher_maps)
        comparison.write(folder.comparison_json)
        folder.comparison_md.write_text(comparison_table(comparison) + "\n")
        save_map_figure(teacher, student, folder.maps_figure, p.device)
    return collectives.from_main(comparison)


def _training(config: RunConfig, text: str) -> str:
    """The stage line of a training: how many epochs, or that the run is reused or resumed
    (``Run.train`` decides the same from the same files)."""
    if collectives.from_main(config.run_dir.is_trained()):
        return f"{text}: {config.run_dir} is trained, reused"
    resumed = collectives.from_main(config.run_dir.has_started())
    epochs = config.train.epochs
    return f"{text}, {epochs} epoch{'s' if epochs != 1 else ''}" + (" (resumed)" if resumed else "")


def _summary(run: Run, checkpoint: str, device: str) -> CheckpointSummary:
    """Test metrics of ``checkpoint`` (evaluated with J) and its per-image AP."""
    result = run.evaluate(checkpoint, "test", device=device, separability=True)
    loc = result.localization
    return CheckpointSummary(
        pxap=result.pxap, chance=loc.chance if loc is not None else None,
        accuracy=result.accuracy, accuracy_chance=result.classification.chance,
        **(loc.area_rates if loc is not None else
                                     dict.fromkeys(("TP*", "FN*", "FP*", "TN*"))),
        separability=result.separability.mean,
        per_image_ap=result.image_ap())


def _ttest(teacher: RoleResults, student: RoleResults) -> PairedTest | None:
    from histocam.metrics.stats import paired_ttest

    a, b = teacher.best_loc.per_image_ap, student.best_loc.per_image_ap
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    return paired_ttest([a[i] for i in shared], [b[i] for i in shared])


STUDENT_LABELS = {"pixelcam": "PixelCAM", "negev": "NEGEV"}


def _near_chance_warning(role: str, selection: str, row: CheckpointSummary,
                         student: str | None) -> str:
    """Why a checkpoint that classifies near chance matters; ``student``: the student whose
    seeds its maps gave, if they did."""
    text = (f"the {role}'s {selection} checkpoint classifies near chance (CL {row.accuracy:.1f} on "
            f"test; always answering the most frequent class gives {row.accuracy_chance:.1f})")
    return text + (f": its maps are a poor source of seeds for {student}" if student else "")


def comparison_table(results: PipelineComparison) -> str:
    """Markdown table: PxAP, CL, TP*/FN*/FP*/TN*, the FG/BG separability J of the encoder's pixel
    features (PixelCAM Table 4; our definition in docs/protocol.md, "Metrics") at B-LOC and B-CL,
    and the inference cost."""
    t = results.teacher_method
    s = STUDENT_LABELS.get(results.student_method, results.student_method)

    def cell(value: float | None, digits: int = 1) -> str:
        return f"{value:.{digits}f}" if value is not None else "n/a"

    lines = ["| model | selection | PxAP | chance | CL | TP* | FN* | FP* | TN* | J | map ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    warnings = []
    for name, role, label in (("teacher", results.teacher, t),
                              ("student", results.student, f"{t} + {s}")):
        for ckpt in SELECTED:
            r = role.at(ckpt)
            cells = [cell(v) for v in (r.pxap, r.chance, r.accuracy, *r.area_rates.values())]
            if r.near_chance:
                cells[2] += " ⚠"
                seeds = name == "teacher" and ckpt == results.teacher_maps
                warnings.append(_near_chance_warning(name, LABEL[ckpt], r, s if seeds else None))
            cells.append(cell(r.separability, 3))
            lines.append(f"| {label} | {LABEL[ckpt]} | " + " | ".join(cells)
                         + f" | {role.cost.forward_and_map_ms:.1f} |")
    from histocam.metrics.separability import DEFINITION

    if warnings:
        lines.append("\n" + "\n".join(f"warning: {w}" for w in warnings))
    lines.append("\nchance: the PxAP of an all-ones map on the same test images (the foreground "
                 "fraction).")
    lines.append(f"\nJ (mean over test images with both regions): {DEFINITION}")
    test = results.paired_ttest_pxap_b_loc
    if test:
        lines.append(f"\nper-image AP, B-LOC, {s} − teacher: mean {test.mean_difference:+.2f}"
                     f", t = {test.t:.2f}, p = {test.p:.2g} ({test.test}, n = {test.n})")
    return "\n".join(lines)
