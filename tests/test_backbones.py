"""Backbone weights: strict local loading with a report; timm download fails clearly offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import SHARED

from histocam.models import BackboneConfig, BackboneError, create_encoder

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
