"""``histocam demo``: the PixelCAM pipeline end to end on the embedded synthetic benchmark.

Trains a CAM teacher on synthetic-node (CAMELYON-like tiles: tumour regions in lymph-node tissue,
normal tiles without foreground), stores its B-LOC CAMs, trains PixelCAM from them, evaluates both
on test (B-LOC and B-CL, τ* from valpx), writes the report, prints the comparison table with the
chance levels and three lines that say what it shows; the pipeline's folder (``PipelineDir``)
holds both runs, the table, a figure of test images with both maps, and the report.
EfficientNet-Lite0 with the ImageNet weights that ``pip`` installed (``pretrained: imagenet``,
nothing downloaded at run time), the data and PixelCAM's learning rates of
``benchmarks/configs/node.yaml`` and ``pixelcam-node.yaml``. The teacher trains at one learning
rate for its encoder and head (``head_lr_multiplier: 1``): with the head at ×10, B-LOC can choose
an epoch whose classifier is at chance, whose maps are a poor source of seeds. synthetic-node is
the embedded domain where PixelCAM's gain over its teacher is largest at CPU budgets, so it is
the one that shows clearly what PixelCAM adds (what the demo gives, and in how long:
docs/results.md).

Two variants: the default, and ``quick`` (half the training images, smaller tiles, fewer epochs
and half the test images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from histocam.core.experiment_results import PipelineComparison
from histocam.core.progress import Stages
from histocam.core.studydirs import PipelineDir
from histocam.experiments.pipeline import (
    PIPELINE_STAGES,
    PipelineConfig,
    comparison_table,
    run_pipeline,
)
from histocam.report import build_report


@dataclass(frozen=True)
class Variant:
    """What the default and the quick demo differ in."""

    name: str  # of the pipeline's folder
    n_train: int
    n_test: int
    size: int  # rendered tile side; trained on crops of 7/8 of it, evaluated at that size
    epochs: int


VARIANTS = {"default": Variant("demo", n_train=240, n_test=120, size=192, epochs=10),
            "quick": Variant("demo-quick", n_train=120, n_test=60, size=160, epochs=6)}


def demo_config(out: Path, quick: bool = False, n_train: int | None = None,
                epochs: int | None = None, seed: int = 0) -> PipelineConfig:
    v = VARIANTS["quick" if quick else "default"]
    n_train, epochs, crop = n_train or v.n_train, epochs or v.epochs, v.size * 7 // 8
    # one rate for encoder and head, in both stages: PixelCAM's 1×1 pixel head as in
    # benchmarks/configs/pixelcam-node.yaml, and a teacher whose B-LOC epoch classifies
    train = {"epochs": epochs, "batch_size": 32, "lr": 0.01, "lr_step": max(epochs - 2, 1),
             "head_lr_multiplier": 1.0, "num_workers": 2}
    return PipelineConfig.model_validate({
        "name": v.name, "out_dir": str(out), "seed": seed,
        "data": {"dataset": "synthetic-node", "resize": v.size, "crop": crop, "eval_size": crop,
                 "synthetic": {"size": v.size, "n_train": n_train, "n_valcl": 40,
                               "n_test": v.n_test, "seed": seed,
                               "cache_dir": str(Path(out) / "cache")}},
        "backbone": {"name": "efficientnet_lite0", "pretrained": "imagenet"},
        "teacher": {"method": {"name": "cam"}, "train": train},
        "student": {"method": {"name": "pixelcam"}, "train": train},
    })


def what_it_shows(results: PipelineComparison, folder: PipelineDir) -> list[str]:
    """Three lines under the table: what the teacher learnt, what PixelCAM added, where to look."""
    t, s = results.teacher.best_loc, results.student.best_loc
    gain = s.pxap - t.pxap
    figure, report = (p.relative_to(folder.root) for p in (folder.maps_figure, folder.report))
    return [
        f"1. The CAM teacher learnt from image labels only (tumour or normal tile): at B-LOC it "
        f"classifies {t.accuracy:.1f}% of the test tiles and its maps localise tumour at PxAP "
        f"{t.pxap:.1f}, where an all-ones map scores {t.chance:.1f} (chance).",
        f"2. PixelCAM learnt a pixel classifier from pixels sampled out of those maps: PxAP "
        f"{s.pxap:.1f} at B-LOC, {abs(gain):.1f} {'above' if gain >= 0 else 'below'} its "
        f"teacher" + _per_image(results) + ".",
        f"3. {figure} shows both maps beside the tumour outline (CAMs are min–max normalised per "
        f"image, PixelCAM's are probabilities); {report} has the training curves, every table "
        "and galleries of the best and worst tiles.",
    ]


def _per_image(results: PipelineComparison) -> str:
    test = results.paired_ttest_pxap_b_loc
    if test is None:
        return ""
    text = (f"; per tumour tile, student − teacher AP {test.mean_difference:+.1f} (paired t-test "
            f"p = {test.p:.2g}, n = {test.n})")
    if test.p >= 0.05:  # the gain is then in how the maps compare across tiles
        text += (", not significant tile by tile: PxAP pools the pixels of every tile, and "
                 "PixelCAM's probabilities stay low on normal tiles where a CAM reaches 1")
    return text


def run_demo(out: Path, quick: bool = False, n_train: int | None = None,
             epochs: int | None = None, seed: int = 0) -> PipelineComparison:
    from rich.console import Console

    console = Console(highlight=False)
    config = demo_config(Path(out), quick, n_train, epochs, seed)
    synth = config.data.synthetic
    console.print(f"[bold]histocam demo{' --quick' if quick else ''}[/]: CAM teacher -> its maps "
                  f"-> PixelCAM on synthetic-node ({synth.n_train} training tiles of "
                  f"{synth.size} px, {config.teacher.train.epochs} epochs each, seed {seed}); "
                  f"run directory {config.root}")
    stages = Stages(PIPELINE_STAGES + 1)
    results = run_pipeline(config, stages=stages)
    folder = PipelineDir(config.root)
    stages.next("writing the report of both runs")
    report = build_report([folder.root], folder.report,  # both runs of the pipeline
                          title="histocam demo", device=config.device)
    console.print(comparison_table(results), soft_wrap=True)  # no wrapped rows
    console.print("\n" + "\n".join(what_it_shows(results, folder)), soft_wrap=True)
    console.print(f"\nfigure: {folder.maps_figure}\ntable:  {folder.comparison_md}\n"
                  f"report: {report}")
    return results
