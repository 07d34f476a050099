"""The seeded-student pipeline: teacher -> stored CAMs -> PixelCAM or NEGEV -> evaluation of both.

The pipeline config composes the two runs: shared ``data``, ``backbone``, seed and device, and one
stage per run (``teacher: {method, train}``, ``student: {method, train, teacher_maps, init}``).
``run_pipeline`` trains the teacher (reused if its run already exists), exports its B-LOC CAMs on
train, trains the student (PixelCAM or NEGEV, its classifier the teacher's method) from the B-CL
teacher checkpoint, evaluates both at B-LOC and B-CL on test (τ* from valpx) and writes
``comparison.json``, ``comparison.md``, ``figures/maps.png`` and the inference cost of each map.
Run directories: ``<out_dir>/<name>/teacher-<method>`` and ``<out_dir>/<name>/<student>-<method>``.
Under torchrun every stage is distributed (one process group) and rank 0 alone writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, Literal

import torch
import yaml
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from histocam.core import collectives
from histocam.core.configs import StrictModel, load_config_tree
from histocam.core.devices import command_device, resolve_device
from histocam.data.config import DataConfig
from histocam.experiments.map_figure import save_map_figure
from histocam.maps.store import store_is_current, store_paths
from histocam.methods.base import MethodConfig
from histocam.methods.catalog import method_config
from histocam.methods.composed import ComposedConfig
from histocam.methods.student import SeededStudentConfig
from histocam.models.backbones import BackboneConfig
from histocam.runs.run import Run, is_trained
from histocam.train.run_config import RunConfig, RunIdentity, TrainConfig
from histocam.train.trainer import Trainer


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


def load_pipeline_config(path: str | Path | None = None,
                         overrides: list[str] | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate(load_config_tree(path, overrides))


def teacher_run_config(p: PipelineConfig) -> RunConfig:
    teacher = p.teacher.method.model_copy(update={"backbone": p.backbone})
    return RunConfig(name=f"teacher-{teacher.name}", out_dir=p.root, seed=p.seed,
                     deterministic=p.deterministic, device=p.device, data=p.data, method=teacher,
                     train=p.teacher.train)


def student_run_config(p: PipelineConfig, teacher: Run) -> RunConfig:
    """The student's run: the teacher's method as its classifier, the teacher's maps as seeds."""
    s = p.student
    cams, _ = store_paths(teacher.dir, s.teacher_maps, "train")
    classifier = teacher.config.method
    if isinstance(classifier, ComposedConfig):  # a top-down teacher: its classifier
        classifier = classifier.classifier
    # the classifier's own backbone is dropped when RunConfig validates the method again
    method = s.method.model_copy(update={"backbone": p.backbone, "classifier": classifier})
    return RunConfig(
        name=f"{method.name}-{teacher.config.method.name}", out_dir=p.root, seed=p.seed,
        deterministic=p.deterministic, device=p.device, data=p.data, method=method,
        train=s.train, cams=cams,
        init=teacher.checkpoint_path("best-cl") if s.init == "teacher" else None)


def inference_cost(run: Run, data: DataConfig, device: str, batch: int = 8,
                   repeats: int = 3) -> dict[str, float]:
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
    return {"forward_ms": forward, "forward_and_map_ms": mapped, "ratio": mapped / forward}


def run_pipeline(p: PipelineConfig, progress: bool = True) -> dict:
    """The whole pipeline; returns the comparison (on every rank).

    Under torchrun every stage runs on all the ranks in one process group (this call's, or the
    caller's when it has one): the trainings are data-parallel, the map export and the evaluations
    share the images out over the ranks, and rank 0 alone writes ``pipeline.yaml`` and the
    comparison files and figure (the other ranks wait for it at barriers). One process group for
    the whole pipeline: made here (or the caller's), joined by every stage."""
    collectives.setup(command_device(p.device))
    if collectives.is_main():
        p.root.mkdir(parents=True, exist_ok=True)
        (p.root / "pipeline.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json"),
                                                             sort_keys=False))
    collectives.barrier()
    if p.teacher_run is not None:  # used as it is: never trained here
        teacher = Run(p.teacher_run).require_trained()
    else:
        teacher_dir = teacher_run_config(p).run_dir
        if not _agreed(is_trained(teacher_dir)):
            Trainer(teacher_run_config(p)).fit(resume=_agreed((teacher_dir / "checkpoints"
                                                                / "last.pt").is_file()))
        teacher = Run(teacher_dir)
    ensure_teacher_maps(teacher, p.student.teacher_maps, p.data, p.device, progress)
    student_cfg = student_run_config(p, teacher)
    if not _agreed(is_trained(student_cfg.run_dir)):
        Trainer(student_cfg).fit(resume=_agreed((student_cfg.run_dir / "checkpoints" / "last.pt")
                                                .is_file()))
    student = Run(student_cfg.run_dir)
    results = {"teacher": {}, "student": {}}
    for role, run in (("teacher", teacher), ("student", student)):
        for ckpt in ("best-loc", "best-cl"):
            m = run.evaluate(ckpt, "test", device=p.device, separability=True)
            loc = m.get("localization", {})
            results[role][ckpt] = {
                "pxap": loc.get("pxap"), "chance": loc.get("chance"),
                "accuracy": m["classification"]["accuracy"],
                **{k: loc.get(k) for k in ("TP*", "FN*", "FP*", "TN*")},
                "separability": m["separability"]["mean"],
                "per_image_ap": _per_image_ap(run.dir, ckpt),
            }
    if collectives.is_main():  # timings and files: rank 0 alone, the others wait
        for role, run in (("teacher", teacher), ("student", student)):
            results[role]["cost"] = inference_cost(run, p.data, p.device)
            results[role]["run"] = str(run.dir)
        results["teacher_method"] = teacher.config.method.name
        results["student_method"] = student.config.method.name
        results["paired_ttest_pxap_b_loc"] = _ttest(results)
        (p.root / "comparison.json").write_text(json.dumps(results, indent=2))
        table = comparison_table(results)
        (p.root / "comparison.md").write_text(table + "\n")
        save_map_figure(teacher, student, p.root / "figures" / "maps.png", p.device)
    return collectives.from_main(results)


def _agreed(flag: bool) -> bool:
    """Rank 0's answer on every rank (a collective): the ranks take the same branch even if their
    views of the run directories differ."""
    return bool(collectives.from_main(flag))


def ensure_teacher_maps(teacher: Run, checkpoint: str, data: DataConfig, device: str,
                        progress: bool = True) -> Path:
    """The teacher's stored maps of the training images, exported unless current for ``data``
    (under torchrun a collective: the ranks export together, rank 0 writes the store)."""
    collectives.setup(command_device(device))
    cams, _ = store_paths(teacher.dir, checkpoint, "train")
    if not _agreed(store_is_current(cams, data, "train")):  # missing, or made for older data
        teacher.export_cams(checkpoint, "train", device=device, progress=progress)
    return cams


def _per_image_ap(run_dir: Path, ckpt: str) -> dict[str, float]:
    import csv

    path = Path(run_dir) / "metrics" / f"{ckpt}-test-per-image.csv"
    with path.open() as fh:
        return {r["id"]: float(r["ap"]) for r in csv.DictReader(fh) if r["ap"] not in ("", "nan")}


def _ttest(results: dict) -> dict | None:
    from histocam.metrics.stats import paired_ttest

    a = results["teacher"]["best-loc"]["per_image_ap"]
    b = results["student"]["best-loc"]["per_image_ap"]
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    return paired_ttest([a[i] for i in shared], [b[i] for i in shared])


STUDENT_LABELS = {"pixelcam": "PixelCAM", "negev": "NEGEV"}


def comparison_table(results: dict) -> str:
    """Markdown table: PxAP, CL, TP*/FN*/FP*/TN*, the FG/BG separability J of the encoder's pixel
    features (PixelCAM Table 4; our definition in PROTOCOL.md) at B-LOC and B-CL, and the
    inference cost."""
    t = results["teacher_method"]
    s = STUDENT_LABELS.get(results["student_method"], results["student_method"])
    lines = ["| model | selection | PxAP | chance | CL | TP* | FN* | FP* | TN* | J | map ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for role, label in (("teacher", t), ("student", f"{t} + {s}")):
        for ckpt in ("best-loc", "best-cl"):
            r = results[role][ckpt]
            cells = [f"{r[k]:.1f}" if r.get(k) is not None else "n/a"
                     for k in ("pxap", "chance", "accuracy", "TP*", "FN*", "FP*", "TN*")]
            cells.append(f"{r['separability']:.3f}" if r.get("separability") is not None else "n/a")
            cost = f"{results[role]['cost']['forward_and_map_ms']:.1f}"
            lines.append(f"| {label} | {ckpt.upper().replace('BEST-', 'B-')} | "
                         + " | ".join(cells) + f" | {cost} |")
    from histocam.metrics.separability import DEFINITION

    lines.append("\nchance: the PxAP of an all-ones map on the same test images (the foreground "
                 "fraction).")
    lines.append(f"\nJ (mean over test images with both regions): {DEFINITION}")
    test = results.get("paired_ttest_pxap_b_loc")
    if test:
        lines.append(f"\nper-image AP, B-LOC, {s} − teacher: mean {test['mean_difference']:+.2f}"
                     f", t = {test['t']:.2f}, p = {test['p']:.2g} ({test['test']}, n = {test['n']})")
    return "\n".join(lines)
