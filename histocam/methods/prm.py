"""PRM, peak response maps (Zhou et al., CVPR 2018): class response maps by a 1×1 convolution;
peak stimulation: the class score is the mean of the local maxima of its map within an r×r window
(the gradient flows only through the peaks). Map = the class response map (no ReLU).
Survey grid r ∈ {3, …, 13}; default 3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


class PRMConfig(ClassifierConfig):
    name: str = "prm"
    window: int = Field(3, ge=1, description="peak window r (odd)")


def peak_pool(maps: torch.Tensor, window: int) -> torch.Tensor:
    """B×K×h×w -> B×K mean of local maxima (values equal to their r×r neighbourhood maximum)."""
    pad = window // 2
    padded = F.pad(maps, (pad, pad, pad, pad), value=float("-inf"))
    local_max = F.max_pool2d(padded, window, stride=1)
    peaks = (maps >= local_max).to(maps.dtype)
    return (maps * peaks).sum(dim=(2, 3)) / peaks.sum(dim=(2, 3))


@register_method("prm", family="pooling", paper="Zhou et al., CVPR 2018",
                 summary="Class response maps scored by the mean of their local peaks.",
                 map="class response map (min–max)")
class PRM(WSOLMethod):
    Config = PRMConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        if self.config.window % 2 == 0:
            raise ValueError(f"PRM window must be odd, got {self.config.window}")
        return nn.Conv2d(channels, num_classes, kernel_size=1)

    def head_forward(self, features):
        maps = self.head(features[-1])
        return MethodOutput(peak_pool(maps, self.config.window), features, maps)
