"""Deep MIL attention pooling (Ilse et al., ICML 2018, eqs. 8–9; docs/protocol.md, "Method
facts").

Per class c: attention logits a_c = w_cᵀ (tanh(V_c F) ⊙ sigm(U_c F)) (gated) or w_cᵀ tanh(V_c F),
with V_c, U_c 1×1 convolutions d -> 128; softmax over positions; bag embedding z_c = Σ_n a_c,n F_n;
logit_c = θ_cᵀ z_c + b_c. The map of class c is its attention (no ReLU)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method


class DeepMILConfig(ClassifierConfig):
    name: str = "deepmil"
    mid_channels: int = Field(128, ge=1)
    gated: bool = True


class MILHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, mid: int, gated: bool) -> None:
        super().__init__()
        self.num_classes, self.mid = num_classes, mid
        self.v = nn.Conv2d(channels, num_classes * mid, 1)
        self.u = nn.Conv2d(channels, num_classes * mid, 1) if gated else None
        self.w = nn.Conv2d(num_classes * mid, num_classes, 1, groups=num_classes)
        self.classifier_weight = nn.Parameter(torch.empty(num_classes, channels))
        self.classifier_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.classifier_weight, a=5**0.5)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = f.shape
        hidden = torch.tanh(self.v(f))
        if self.u is not None:
            hidden = hidden * torch.sigmoid(self.u(f))
        attention = torch.softmax(self.w(hidden).flatten(2), dim=2)  # B×K×N, sums to 1
        bag = torch.einsum("bkn,bdn->bkd", attention, f.flatten(2))
        logits = (bag * self.classifier_weight).sum(-1) + self.classifier_bias
        return logits, attention.view(b, self.num_classes, h, w)


@register_method("deepmil", family="pooling", paper="Ilse et al., ICML 2018",
                 summary="Gated attention pooling of the feature positions per class.",
                 map="attention of the class (min–max)")
class DeepMIL(WSOLMethod):
    Config = DeepMILConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return MILHead(channels, num_classes, self.config.mid_channels, self.config.gated)

    def head_forward(self, features):
        logits, attention = self.head(features[-1])
        return MethodOutput(logits, features, attention)
