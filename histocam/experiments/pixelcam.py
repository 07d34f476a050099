"""The PixelCAM pipeline: teacher -> stored CAMs -> PixelCAM -> evaluation of both, one command.

``run_pipeline`` trains the teacher (reused if its run already exists), exports its B-LOC CAMs on
train, trains PixelCAM from the teacher's B-CL checkpoint, evaluates both at B-LOC and B-CL on test
(τ* from valpx) and writes ``comparison.json``, ``comparison.md``, ``figures/maps.png`` and the
inference cost of each map. Run directories: ``<out_dir>/<name>/teacher-<method>`` and
``<out_dir>/<name>/pixelcam-<method>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import Field, SerializeAsAny, field_validator

from histocam.cams.store import export_cams, store_is_current, store_paths
from histocam.data.config import DataConfig, StrictModel
from histocam.methods.base import MethodConfig
from histocam.methods.registry import method_config
from histocam.models.backbones import BackboneConfig
from histocam.train.config import RunConfig, RunIdentity, TrainConfig


class PixelCAMOptions(StrictModel):
    n: int = Field(5, ge=0)
    lam: float = Field(1.0, ge=0)
    sampler: Literal["pb", "th", "static"] = "pb"
    head: Literal["linear", "mlp3"] = "linear"
    loss_resolution: Literal["full", "low"] = "full"
    negative_class: int | None = None
    negative_all_background: bool = False
    teacher_cams: Literal["best-loc", "best-cl"] = "best-loc"
    init: Literal["teacher", "backbone"] = Field(
        "teacher", description="teacher: start from the teacher's B-CL checkpoint; backbone: from "
        "the backbone's own initialisation (ImageNet weights or scratch)")


class PipelineConfig(RunIdentity):
    name: str = "pixelcam"
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    teacher: SerializeAsAny[MethodConfig] = Field(default_factory=lambda: method_config("cam"))
    teacher_train: TrainConfig = Field(default_factory=TrainConfig)
    pixelcam: PixelCAMOptions = Field(default_factory=PixelCAMOptions)
    pixelcam_train: TrainConfig = Field(default_factory=TrainConfig)
    teacher_run: Path | None = Field(None, description="use this trained teacher run instead")

    @field_validator("teacher", mode="before")
    @classmethod
    def _parse_teacher(cls, value):
        return method_config(value)

    @property
    def root(self) -> Path:
        return self.out_dir / self.name


def teacher_run_config(p: PipelineConfig) -> RunConfig:
    teacher = p.teacher.model_copy(update={"backbone": p.backbone})
    return RunConfig(name=f"teacher-{p.teacher.name}", out_dir=p.root, seed=p.seed,
                     deterministic=p.deterministic, device=p.device, data=p.data, method=teacher,
                     train=p.teacher_train)


def pixelcam_run_config(p: PipelineConfig, teacher_dir: Path) -> RunConfig:
    o = p.pixelcam
    cams, _ = store_paths(teacher_dir, o.teacher_cams, "train")
    teacher_cfg = RunConfig.model_validate(
        yaml.safe_load((teacher_dir / "config.yaml").read_text())).method
    method = {
        "name": "pixelcam", "backbone": p.backbone.model_dump(mode="json"),
        "teacher": teacher_cfg.model_dump(mode="json"), "n": o.n, "lam": o.lam,
        "image_loss": teacher_cfg.image_loss,  # the image classifier and its loss are the teacher's
        "sampler": o.sampler, "head": o.head, "loss_resolution": o.loss_resolution,
        "negative_class": o.negative_class, "negative_all_background": o.negative_all_background,
        "cams": str(cams),
        "init_checkpoint": (str(teacher_dir / "checkpoints" / "best-cl.pt")
                            if o.init == "teacher" else None),
    }
    return RunConfig(name=f"pixelcam-{p.teacher.name}", out_dir=p.root, seed=p.seed,
                     deterministic=p.deterministic, device=p.device, data=p.data, method=method,
                     train=p.pixelcam_train)


def _trained(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "best-cl.pt").is_file() and (
        run_dir / "checkpoints" / "best-loc.pt").is_file()


def inference_cost(run_dir: Path, data: DataConfig, device: str, batch: int = 8,
                   repeats: int = 3) -> dict[str, float]:
    """Milliseconds per image: plain forward, and forward + map of the run's method."""
    from histocam.train.seeding import resolve_device
    from histocam.train.trainer import load_method

    dev = resolve_device(device)
    method, _, _ = load_method(run_dir, "best-loc", str(dev))
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
    from histocam.train.evaluate_run import evaluate_checkpoint
    from histocam.train.trainer import Trainer

    p.root.mkdir(parents=True, exist_ok=True)
    (p.root / "pipeline.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json"),
                                                         sort_keys=False))
    teacher_dir = p.teacher_run or teacher_run_config(p).run_dir
    if not _trained(teacher_dir):
        Trainer(teacher_run_config(p)).fit(resume=(teacher_dir / "checkpoints" / "last.pt")
                                           .is_file())
    cams, _ = store_paths(teacher_dir, p.pixelcam.teacher_cams, "train")
    if not store_is_current(cams, p.data, "train"):  # missing, or made for an older dataset
        export_cams(teacher_dir, p.pixelcam.teacher_cams, "train", device=p.device,
                    progress=progress)
    pix_cfg = pixelcam_run_config(p, teacher_dir)
    if not _trained(pix_cfg.run_dir):
        Trainer(pix_cfg).fit(resume=(pix_cfg.run_dir / "checkpoints" / "last.pt").is_file())
    results = {"teacher": {}, "pixelcam": {}}
    for role, run_dir in (("teacher", teacher_dir), ("pixelcam", pix_cfg.run_dir)):
        for ckpt in ("best-loc", "best-cl"):
            m = evaluate_checkpoint(run_dir, ckpt, "test", device=p.device, separability=True)
            loc = m.get("localization", {})
            results[role][ckpt] = {
                "pxap": loc.get("pxap"), "chance": loc.get("chance"),
                "accuracy": m["classification"]["accuracy"],
                **{k: loc.get(k) for k in ("TP*", "FN*", "FP*", "TN*")},
                "separability": m["separability"]["mean"],
                "per_image_ap": _per_image_ap(run_dir, ckpt),
            }
        results[role]["cost"] = inference_cost(run_dir, p.data, p.device)
        results[role]["run"] = str(run_dir)
    results["teacher_method"] = p.teacher.name
    results["paired_ttest_pxap_b_loc"] = _ttest(results)
    (p.root / "comparison.json").write_text(json.dumps(results, indent=2))
    table = comparison_table(results)
    (p.root / "comparison.md").write_text(table + "\n")
    from histocam.experiments.figures import save_map_figure

    save_map_figure(teacher_dir, pix_cfg.run_dir, p.root / "figures" / "maps.png", p.device)
    return results


def _per_image_ap(run_dir: Path, ckpt: str) -> dict[str, float]:
    import csv

    path = Path(run_dir) / "metrics" / f"{ckpt}-test-per-image.csv"
    with path.open() as fh:
        return {r["id"]: float(r["ap"]) for r in csv.DictReader(fh) if r["ap"] not in ("", "nan")}


def _ttest(results: dict) -> dict | None:
    from histocam.metrics.stats import paired_ttest

    a = results["teacher"]["best-loc"]["per_image_ap"]
    b = results["pixelcam"]["best-loc"]["per_image_ap"]
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    return paired_ttest([a[i] for i in shared], [b[i] for i in shared])


def comparison_table(results: dict) -> str:
    """Markdown table: PxAP, CL, TP*/FN*/FP*/TN*, the FG/BG separability J of the encoder's pixel
    features (PixelCAM Table 4; our definition in PROTOCOL.md) at B-LOC and B-CL, and the
    inference cost."""
    t = results["teacher_method"]
    lines = ["| model | selection | PxAP | chance | CL | TP* | FN* | FP* | TN* | J | map ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for role, label in (("teacher", t), ("pixelcam", f"{t} + PixelCAM")):
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
        lines.append(f"\nper-image AP, B-LOC, PixelCAM − teacher: mean {test['mean_difference']:+.2f}"
                     f", t = {test['t']:.2f}, p = {test['p']:.2g} ({test['test']}, n = {test['n']})")
    return "\n".join(lines)
