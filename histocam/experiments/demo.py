"""``histocam demo``: the PixelCAM pipeline end to end on the embedded synthetic benchmark.

Trains a CAM teacher on synthetic-node (CAMELYON-like tiles: tumour regions in lymph-node tissue,
normal tiles without foreground), stores its B-LOC CAMs, trains PixelCAM from them, evaluates both
on test (B-LOC and B-CL, τ* from valpx), prints the comparison table with the chance level and
writes the report; the pipeline's folder (``PipelineDir``) holds both runs, the table, a figure of
test images with both maps, and the report. EfficientNet-Lite0 with the ImageNet weights that
``pip`` installed (``pretrained: imagenet``, nothing downloaded at run time), the data and learning
rates of ``benchmarks/configs/node.yaml`` and ``pixelcam-node.yaml``, 10 epochs each.
synthetic-node is the embedded domain where PixelCAM's gain over its teacher is largest at CPU
budgets, so it is the one that shows clearly what PixelCAM adds (what the demo gives, and in how
long: docs/results.md).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from histocam.core.experiment_results import PipelineComparison
from histocam.core.rundir import PipelineDir
from histocam.experiments.pipeline import PipelineConfig, comparison_table, run_pipeline
from histocam.report import build_report

console = Console()


def demo_config(out: Path, n_train: int = 240, seed: int = 0, epochs: int = 10) -> PipelineConfig:
    teacher = {"epochs": epochs, "batch_size": 32, "lr": 0.01, "lr_step": max(epochs - 2, 1),
               "num_workers": 2}
    # PixelCAM's 1×1 pixel head at the encoder's rate (×1), as benchmarks/configs/pixelcam-node.yaml
    pixelcam = {**teacher, "head_lr_multiplier": 1.0}
    return PipelineConfig.model_validate({
        "name": "demo", "out_dir": str(out), "seed": seed,
        "data": {"dataset": "synthetic-node", "resize": 192, "crop": 168, "eval_size": 168,
                 "synthetic": {"size": 192, "n_train": n_train, "n_valcl": 40, "n_test": 120,
                               "seed": seed, "cache_dir": str(Path(out) / "cache")}},
        "backbone": {"name": "efficientnet_lite0", "pretrained": "imagenet"},
        "teacher": {"method": {"name": "cam"}, "train": teacher},
        "student": {"method": {"name": "pixelcam"}, "train": pixelcam},
    })


def run_demo(out: Path, n_train: int = 240, seed: int = 0, epochs: int = 10
             ) -> PipelineComparison:
    config = demo_config(Path(out), n_train, seed, epochs)
    console.print(f"[bold]histocam demo[/]: CAM teacher -> stored CAMs -> PixelCAM on "
                  f"synthetic-node ({n_train} train images, seed {seed}), run dir {config.root}")
    results = run_pipeline(config)
    console.print(comparison_table(results), highlight=False, soft_wrap=True)  # no wrapped rows
    folder = PipelineDir(config.root)
    report = build_report([folder.root], folder.report,  # both runs of the pipeline
                          title="histocam demo", device=config.device)
    console.print(f"\nfigure: {folder.maps_figure}\ntable:  {folder.comparison_md}\n"
                  f"report: {report}")
    return results
