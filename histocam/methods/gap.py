"""GAP (Lin et al., "Network in Network", ICLR 2014; survey §2.2): class maps by a 1×1 convolution,
class scores by global average pooling of each map. The map is the class map itself (no ReLU)."""

from __future__ import annotations

from torch import nn

from histocam.methods.base import MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


@register_method("gap", family="pooling", paper="Lin et al., ICLR 2014",
                 summary="Class maps by a 1×1 convolution, scored by their global average.",
                 map="class map (min–max)")
class GAP(WSOLMethod):
    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return nn.Conv2d(channels, num_classes, kernel_size=1)

    def head_forward(self, features):
        maps = self.head(features[-1])
        return MethodOutput(maps.mean(dim=(2, 3)), features, maps)
