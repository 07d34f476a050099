"""MAX-Pool (Oquab et al., CVPR 2015; survey §2.2): class maps by a 1×1 convolution, class score =
the maximum response of each map. Map = the class map (no ReLU)."""

from __future__ import annotations

from torch import nn

from histocam.methods.base import MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


@register_method("maxpool", family="pooling", paper="Oquab et al., CVPR 2015",
                 summary="Class maps by a 1×1 convolution, scored by their maximum.",
                 map="class map (min–max)")
class MaxPool(WSOLMethod):
    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return nn.Conv2d(channels, num_classes, kernel_size=1)

    def head_forward(self, features):
        maps = self.head(features[-1])
        return MethodOutput(maps.amax(dim=(2, 3)), features, maps)
