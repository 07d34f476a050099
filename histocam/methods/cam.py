"""CAM (Zhou et al., CVPR 2016, eq. 1–2): features -> global average pooling -> linear classifier;
the map of class c is Σ_k W[c, k] · F_k (bias excluded), followed by the protocol's ReLU and
min–max. The weight row is indexed by the class directly: the head has exactly K rows, no extra
background row (the off-by-one of the reference code, docs/protocol.md,
"Deviations from the papers")."""

from __future__ import annotations

import torch
from torch import nn

from histocam.methods.base import MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


@register_method("cam", family="pooling", paper="Zhou et al., CVPR 2016",
                 summary="Global average pooling and a linear classifier; the map is the class-"
                 "weighted sum of the feature maps.",
                 map="class activation map (ReLU, min–max)")
class CAM(WSOLMethod):
    relu_maps = True

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return nn.Linear(channels, num_classes)

    def head_forward(self, features):
        f = features[-1]
        logits = self.head(f.mean(dim=(2, 3)))
        maps = torch.einsum("kd,bdhw->bkhw", self.head.weight, f)
        return MethodOutput(logits, features, maps)
