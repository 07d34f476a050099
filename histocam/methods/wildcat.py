"""WILDCAT (Durand et al., CVPR 2017; survey eq. 6): M modality maps per class (1×1 convolution),
averaged into a class map; class score s_c = mean of the k⁺ highest + α · mean of the k⁻ lowest
activations. k given as a fraction of positions (< 1) or a count (≥ 1). Map = the class map.
Defaults from the survey's grid (Table 9): α = 0.6, kmax = 0.3, kmin = 0.1, 5 modalities."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


class WildcatConfig(ClassifierConfig):
    name: str = "wildcat"
    kmax: float = Field(0.3, gt=0)
    kmin: float = Field(0.1, ge=0)
    alpha: float = Field(0.6, ge=0)
    modalities: int = Field(5, ge=1)


def _count(k: float, n: int) -> int:
    return min(n, max(1, round(k * n))) if k < 1 else min(n, int(k))


def wildcat_pool(maps: torch.Tensor, kmax: float, kmin: float, alpha: float) -> torch.Tensor:
    """B×K×h×w -> B×K: mean of top-k⁺ + α · mean of bottom-k⁻ per map."""
    flat = maps.flatten(2)
    n = flat.shape[2]
    score = flat.topk(_count(kmax, n), dim=2).values.mean(dim=2)
    if kmin > 0 and alpha > 0:
        score = score + alpha * flat.topk(_count(kmin, n), dim=2, largest=False).values.mean(dim=2)
    return score


@register_method("wildcat", family="pooling", paper="Durand et al., CVPR 2017",
                 summary="Several modality maps per class, scored by the top-k and the weighted "
                 "bottom-k positions.",
                 map="class map (min–max)")
class Wildcat(WSOLMethod):
    Config = WildcatConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return nn.Conv2d(channels, num_classes * self.config.modalities, kernel_size=1)

    def head_forward(self, features):
        b, _, h, w = features[-1].shape
        m = self.config.modalities
        maps = self.head(features[-1]).view(b, self.num_classes, m, h, w).mean(dim=2)
        c = self.config
        return MethodOutput(wildcat_pool(maps, c.kmax, c.kmin, c.alpha), features, maps)
