"""LSE pooling (Pinheiro & Collobert, CVPR 2015; Sun et al., CVPR 2016; survey eq. 3):
s_c = (1/q) · log( (1/hw) Σ_ij exp(q · M_c,ij) ), between the mean (q -> 0) and the max (q -> ∞).
Map = the class map (no ReLU). Survey grid q ∈ {1, …, 10}; default 5."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


class LSEConfig(ClassifierConfig):
    name: str = "lse"
    q: float = Field(5.0, gt=0, description="sharpness: small -> mean, large -> max")


def lse_pool(maps: torch.Tensor, q: float) -> torch.Tensor:
    """B×K×h×w -> B×K log-sum-exp pooling (numerically stable via logsumexp)."""
    flat = maps.flatten(2)
    return (torch.logsumexp(q * flat, dim=2) - math.log(flat.shape[2])) / q


@register_method("lse", family="pooling", paper="Pinheiro & Collobert, CVPR 2015",
                 summary="Class maps pooled by log-sum-exp, between the mean and the max.",
                 map="class map (min–max)")
class LSE(WSOLMethod):
    Config = LSEConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return nn.Conv2d(channels, num_classes, kernel_size=1)

    def head_forward(self, features):
        maps = self.head(features[-1])
        return MethodOutput(lse_pool(maps, self.config.q), features, maps)
