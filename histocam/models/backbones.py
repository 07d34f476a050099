"""Backbones via timm, exposing spatial feature maps for WSOL.

CNNs (resnet18/50, vgg16, inception_v3, efficientnet_lite0, any timm CNN) are created with
``features_only=True`` and return their stage outputs; ViTs (deit_tiny/small/base, vit_*) return
their last-block patch tokens reshaped to the patch grid (class/distillation tokens dropped).

Weights: ``pretrained: true`` uses timm's own download (works online, fails offline with a message
naming the way out); ``pretrained: <path>`` loads a local state dict with ``weights_only=True``:
every encoder parameter must be present with the right shape, keys of the classification head that
the encoder drops are reported as ignored, anything else unexpected is an error.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from pydantic import Field
from torch import nn

from histocam.data.config import StrictModel


class BackboneError(RuntimeError):
    """A backbone that cannot be built or whose weights cannot be loaded."""


class BackboneConfig(StrictModel):
    name: str = Field("resnet18", description="any timm model name")
    pretrained: bool | Path = Field(False, description="true (timm download) or a local .pth file")
    output_stride: int | None = Field(None, description="CNN output stride (8, 16 or 32)")


def _is_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


class Encoder(nn.Module):
    """``forward(x)`` -> list of feature maps B×C_i×h_i×w_i, shallow to deep; the last is the one
    CAMs are computed on. ``channels`` lists C_i."""

    def __init__(self, model: nn.Module, vit: bool) -> None:
        super().__init__()
        self.model = model
        self.vit = vit
        if vit:
            self.channels = [model.embed_dim]
            self.reductions = [model.patch_embed.patch_size[0]]
        else:
            self.channels = list(model.feature_info.channels())
            self.reductions = list(model.feature_info.reduction())

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.vit:
            return list(self.model(x))
        tokens = self.model.forward_features(x)
        tokens = tokens[:, self.model.num_prefix_tokens :]
        b, n, d = tokens.shape
        h, w = x.shape[-2] // self.reductions[0], x.shape[-1] // self.reductions[0]
        if h * w != n:
            raise BackboneError(f"{n} patch tokens do not form a {h}×{w} grid")
        return [tokens.transpose(1, 2).reshape(b, d, h, w)]


def _create(config: BackboneConfig, pretrained: bool) -> tuple[nn.Module, bool]:
    try:
        probe = timm.create_model(config.name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        raise BackboneError(f"unknown timm backbone {config.name!r}: {exc}") from exc
    vit = _is_vit(probe)
    kwargs = {}
    if config.output_stride and not vit:
        kwargs["output_stride"] = config.output_stride
    try:
        if vit:
            model = timm.create_model(config.name, pretrained=pretrained, num_classes=0)
        else:
            model = timm.create_model(config.name, pretrained=pretrained, features_only=True,
                                      **kwargs)
    except BackboneError:
        raise
    except Exception as exc:  # network errors surface as many types (OSError, hub errors, ...)
        if pretrained:
            raise BackboneError(
                f"could not fetch timm's pretrained weights for {config.name!r} ({type(exc).__name__}:"
                f" {exc}). Offline? Download the weights elsewhere and pass the file instead: "
                "backbone.pretrained=/path/to/weights.pth") from exc
        raise BackboneError(f"cannot build backbone {config.name!r}: {exc}") from exc
    return model, vit


def load_local_weights(model: nn.Module, path: Path) -> dict[str, list[str]]:
    """Load a state dict file strictly into ``model``; returns the ignored head keys."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: not a loadable state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    own_modules = {k.split(".")[0] for k in own}
    ignored = [k for k in unexpected if k.split(".")[0] not in own_modules]
    foreign = [k for k in unexpected if k not in ignored]
    shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
    if foreign:
        problems.append(f"{len(foreign)} unexpected keys (e.g. {foreign[:5]})")
    if shape:
        problems.append(f"{len(shape)} shape mismatches (e.g. {sorted(shape)[:5]})")
    if problems:
        raise BackboneError(f"{path}: weights do not match {type(model).__name__}: "
                            + "; ".join(problems))
    model.load_state_dict({k: state[k] for k in own})
    return {"ignored": ignored}


def create_encoder(config: BackboneConfig | str) -> Encoder:
    """Build the encoder described by ``config`` (a name means random initialisation)."""
    if isinstance(config, str):
        config = BackboneConfig(name=config)
    use_timm_weights = config.pretrained is True
    model, vit = _create(config, use_timm_weights)
    encoder = Encoder(model, vit)
    if isinstance(config.pretrained, Path):
        report = load_local_weights(model, config.pretrained)
        encoder.weights_report = report
    return encoder
