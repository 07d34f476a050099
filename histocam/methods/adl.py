"""ADL, attention-based dropout layer (Choe & Shim, CVPR 2019, §3; survey §2.2.1).

A parameter-free layer applied, in training only, to the output F (B×C×h×w) of chosen encoder
stages (forward hooks on ``encoder.stage_modules()``):

- self-attention map A = mean over channels of F (B×1×h×w);
- drop mask M_drop = 1[A ≤ γ · max A] (per image: the most activated positions, above γ times the
  image's maximum, are dropped);
- importance map M_imp = sigmoid(A);
- at each forward pass and for each layer, M = M_drop with probability ``drop_rate``, M_imp
  otherwise (one draw per iteration for the whole batch, ADL §3); the output is F ⊙ M.

In evaluation mode the layer is the identity. The network is CAM's (GAP + linear, cam.py) and the
map is the class activation map, min–max without ReLU (docs/protocol.md, "Maps", lists ADL among the built-in
maps). Where: ADL puts the layers after high-level blocks (ResNet50 in Choe et al.'s benchmark code,
CVPR 2020: after the first block of the 3rd stage, after the first and the last block of the 4th);
here they act on whole stage outputs, by default the last two (``stages: [-2, -1]``). Defaults
from the survey's grid (Table 9): drop rate ∈ {0, 0.25, 0.35, 0.45, 0.5, 0.75} → 0.75 and
γ ∈ {0.75, 0.85, 0.9} → 0.9, the defaults of Choe et al.'s code.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from histocam.methods.base import ClassifierConfig
from histocam.methods.cam import CAM
from histocam.methods.catalog import register_method


class ADLConfig(ClassifierConfig):
    name: str = "adl"
    drop_rate: float = Field(0.75, ge=0, le=1, description="probability of the drop mask (else "
                             "the importance map) at each forward pass of each layer")
    gamma: float = Field(0.9, ge=0, le=1, description="drop positions whose attention exceeds "
                         "γ · the image's maximum attention")
    stages: list[int] = Field([-2, -1], min_length=1, description="encoder stages followed by an "
                              "ADL layer (indices into the stage list; negative: from the deepest)")


def drop_mask(attention: torch.Tensor, gamma: float) -> torch.Tensor:
    """B×1×h×w: 0 where the attention exceeds γ · its per-image maximum, 1 elsewhere."""
    peak = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return (attention <= gamma * peak).to(attention.dtype)


class AttentionDropout(nn.Module):
    """One ADL layer (module docstring); ``hook`` applies it to a stage's output."""

    def __init__(self, drop_rate: float, gamma: float) -> None:
        super().__init__()
        self.drop_rate, self.gamma = drop_rate, gamma

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return features
        attention = features.mean(dim=1, keepdim=True)
        if float(torch.rand(())) < self.drop_rate:
            return features * drop_mask(attention, self.gamma)
        return features * torch.sigmoid(attention)

    def hook(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return self(output)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, gamma={self.gamma}"


@register_method("adl", family="erasing", paper="Choe and Shim, CVPR 2019",
                 summary="CAM whose stage outputs lose their most attended positions, or are "
                 "weighted by a sigmoid importance map, at random in training.",
                 map="class activation map (min–max)")
class ADL(CAM):
    Config = ADLConfig
    relu_maps = False

    def __init__(self, config: ADLConfig, num_classes: int, **kwargs) -> None:
        super().__init__(config, num_classes, **kwargs)
        if self.encoder.vit:
            raise ValueError("ADL needs a CNN backbone (its layers act on B×C×h×w stage outputs)")
        stages = self.encoder.stage_modules()
        bad = [i for i in config.stages if not -len(stages) <= i < len(stages)]
        if bad or len({i % len(stages) for i in config.stages}) != len(config.stages):
            raise ValueError(f"ADL stages {config.stages}: each must be a distinct index into the "
                             f"{len(stages)} stages of {config.backbone.name}")
        self.adl_layers = nn.ModuleList(AttentionDropout(config.drop_rate, config.gamma)
                                        for _ in config.stages)
        self._handles = [stages[i].register_forward_hook(layer.hook)
                         for i, layer in zip(config.stages, self.adl_layers)]
