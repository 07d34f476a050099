"""The extension points of methods and runs (docs/ARCHITECTURE.md): the trainer calls each hook,
supplies ``batch["negative"]`` from the data's fully negative class, the run layer evaluates on
other data with τ* from the run's own valpx, and encoder stages and ViT blocks are reachable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_run

from histocam.methods.cam import CAM
from histocam.models.backbones import create_encoder
from histocam.runs import Run
from histocam.train import RunConfig, Trainer


def _config(tmp_path: Path, dataset: str = "synthetic-node", epochs: int = 1) -> RunConfig:
    return RunConfig.model_validate(tiny_run(
        tmp_path, name="r", seed=1, data={"dataset": dataset, "synthetic": {"n_valcl": 4}},
        train={"epochs": epochs}))


def test_trainer_calls_every_hook_and_supplies_negative(tmp_path: Path, monkeypatch) -> None:
    calls: list = []
    original_step = CAM.training_step

    def prepare_batch(self, batch):
        calls.append(("prepare", batch["label"].tolist(), batch["negative"].tolist()))
        batch = dict(batch)
        batch["image"] = torch.zeros_like(batch["image"])  # what the step then sees
        return batch

    def training_step(self, batch):
        assert float(batch["image"].abs().sum()) == 0.0
        calls.append(("step",))
        return original_step(self, batch)

    monkeypatch.setattr(CAM, "prepare_batch", prepare_batch)
    monkeypatch.setattr(CAM, "training_step", training_step)
    monkeypatch.setattr(CAM, "on_epoch_end", lambda self, epoch: calls.append(("epoch", epoch)))
    Trainer(_config(tmp_path, epochs=2)).fit()
    prepared = [c for c in calls if c[0] == "prepare"]
    assert len(prepared) == 4 and sum(c[0] == "step" for c in calls) == 4  # 2 epochs × 2 batches
    assert [c for c in calls if c[0] == "epoch"] == [("epoch", 1), ("epoch", 2)]
    for _, labels, negative in prepared:  # synthetic-node: class 0 (normal) is fully negative
        assert negative == [y == 0 for y in labels]


def test_negative_class_of_the_data_config(tmp_path: Path) -> None:
    from histocam.data.config import DataConfig
    from histocam.data.errors import DataError
    from histocam.data.open import negative_class

    names = ["normal", "tumor"]
    assert negative_class(DataConfig(dataset="synthetic-node"), names) == 0
    assert negative_class(DataConfig(dataset="synthetic-colon"), ["benign", "malignant"]) is None
    assert negative_class(DataConfig(dataset="synthetic-node", negative_class="none"), names) is None
    lists = tmp_path / "CAMELYON512" / "fold-0"
    assert negative_class(DataConfig(dataset=str(lists)), names) == 0
    assert negative_class(DataConfig(dataset=str(tmp_path / "camelyon-ish")), names) is None
    with pytest.raises(DataError, match="'tumour' is not a class"):
        negative_class(DataConfig(dataset="synthetic-node", negative_class="tumour"), names)


@pytest.mark.slow
def test_run_evaluates_on_other_data_with_its_own_tau(tmp_path: Path) -> None:
    from histocam.data.open import open_source
    from histocam.metrics.confusion import best_threshold
    from histocam.metrics.histogram import PixelHistogram
    from histocam.train.split_pass import evaluate_split

    cfg = _config(tmp_path, "synthetic-colon")
    Trainer(cfg).fit()
    run = Run(cfg.run_dir)
    own = run.evaluate("best-loc")
    other = run.evaluate("best-loc", data="synthetic-node")
    tag = run.data_tag("synthetic-node")
    assert tag.startswith("synthetic-node-") and run.data_tag(None) is None
    saved = json.loads((cfg.run_dir.root / "metrics" / tag / "best-loc-test.json").read_text())
    assert saved == other.model_dump() and other.data == "synthetic-node"
    assert saved["class_names"] == {"run": ["benign", "malignant"], "data": ["normal", "tumor"],
                                    "mapping": "by index"}
    assert (cfg.run_dir.root / "metrics" / "best-loc-test.json").is_file()
    # τ* of both is the argmax mIoU of the run's own valpx, recomputed here independently
    method, _ = run.method("best-loc")
    valpx = PixelHistogram()
    evaluate_split(method, open_source(cfg.data).dataset("valpx"), cfg.data, torch.device("cpu"),
                   {"pixels": valpx})
    tau = best_threshold(valpx)
    assert own.localization.tau_star_valpx == tau
    assert other.localization.tau_star_valpx == tau
    assert own.localization.tau_star_source == "valpx"
    assert other.localization.chance != own.localization.chance  # other images


def test_run_errors_name_the_problem(tmp_path: Path) -> None:
    from histocam.runs import RunError

    with pytest.raises(RunError, match="no such run directory"):
        Run(tmp_path / "missing")
    with pytest.raises(RunError, match="no config.yaml"):
        Run(tmp_path)


def test_stage_hooks_change_intermediate_features() -> None:
    encoder = create_encoder("test_resnet").eval()
    x = torch.rand(2, 3, 64, 64)
    stages = encoder.stage_modules()
    assert len(stages) == len(encoder.channels)
    with torch.no_grad():
        before = encoder(x)
    handle = stages[1].register_forward_hook(lambda module, inputs, output: output * 0)
    try:
        with torch.no_grad():
            after = encoder(x)
    finally:
        handle.remove()
    assert torch.equal(after[0], before[0])  # stages before the hook are unchanged
    assert float(after[1].abs().sum()) == 0.0 and not torch.equal(after[-1], before[-1])


def test_vit_block_tokens_and_attention() -> None:
    encoder = create_encoder("test_vit").eval()
    x = torch.rand(2, 3, *encoder.model.patch_embed.img_size)
    tokens, attention = encoder.vit_blocks(x)
    assert len(tokens) == len(attention) == len(encoder.model.blocks)
    reference = encoder.model.forward_features((x - encoder.mean) / encoder.std)
    assert torch.allclose(tokens[-1], reference, atol=1e-5)
    n = reference.shape[1]
    assert attention[0].shape == (2, encoder.model.blocks[0].attn.num_heads, n, n)
    assert torch.allclose(attention[0].sum(-1), torch.ones(()), atol=1e-5)


def test_output_stride_is_refused_for_a_vit() -> None:
    from histocam.models.backbones import BackboneConfig, BackboneError

    with pytest.raises(BackboneError, match="test_vit is a ViT.*output_stride"):
        create_encoder(BackboneConfig(name="test_vit", output_stride=16))


@pytest.mark.skipif(not __import__("helpers").GLAS_SHARED.is_dir(),
                    reason="shared GlaS copy absent")
@pytest.mark.slow
def test_a_synthetic_run_evaluates_on_glas(tmp_path: Path) -> None:
    from helpers import GLAS_SHARED

    cfg = _config(tmp_path, "synthetic-colon")
    Trainer(cfg).fit()
    metrics = Run(cfg.run_dir).evaluate("best-cl", data=str(GLAS_SHARED))
    assert metrics.data == str(GLAS_SHARED)
    assert metrics.class_names.data == ["benign", "malignant"]
    # the 85 GlaS train images hold out their patient-disjoint test part: 18 images of 5 patients
    assert 0 < metrics.localization.pxap <= 100 and metrics.localization.n_images == 18
