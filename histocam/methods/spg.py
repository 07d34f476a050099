"""SPG, self-produced guidance (Zhang et al., ECCV 2018, §3; survey §2.2.1, "Features enhancement").

Networks (F_s: the encoder's stage s; all maps are compared at the input resolution H×W):

- SPG-A: a 1×1 convolution of the last stage to K class maps, scored by global average pooling
  (the classifier; its map of class c is the method's map, min–max without ReLU, docs/protocol.md, "Maps");
- SPG-B: two branches on intermediate stages, B1 on ``b1_stage`` and B2 on ``b2_stage``: each its
  own 3×3 convolution (``b_channels``, ReLU), then shared layers (3×3 convolution, ReLU, 1×1
  convolution to one logit map);
- SPG-C: on the last stage, a 3×3 convolution (``c_channels``, ReLU) and a 1×1 convolution to one
  logit map.

Self-produced guidance (SPG §3.2–3.3): a map P ∈ [0, 1] and thresholds (δ_h, δ_l) give pixel targets
T = 1 (foreground) where P > δ_h, 0 (background) where P < δ_l, ignored elsewhere. Three guidance
steps, each a binary cross-entropy over the non-ignored pixels (mean; 0 if none):

1. B2 learns from T(Ã, δ1h, δ1l), Ã the SPG-A map of the ground-truth class, upsampled, then
   min–max normalised;
2. B1 learns from T(σ(B2), δ2h, δ2l);
3. C learns from T((σ(B1) + σ(B2)) / 2, δ3h, δ3l), the fused SPG-B output;

loss = CE(SPG-A) + the three BCE terms, weights 1. Targets are constants (no gradient through P).

What the paper fixes and what it leaves open. The paper (§3) feeds the outputs of two consecutive
SPG-A blocks to SPG-B's two branches (three convolutions and a sigmoid each), learns SPG-B from the
FG/BG seeds of SPG-A's attention map and supervises SPG-C with the fused SPG-B output. Which branch
learns from which map (the cascade above), the widths (1024 for SPG-B and 512 for SPG-C at
ResNet50) and the fallback (fewer than ``fallback_min_pixels`` pixels above δ_h: the foreground
becomes P > ``fallback_ratio`` · max P) are the authors' code, re-implemented in Choe et al.'s
benchmark code (CVPR 2020) with the three threshold pairs of the survey's Table 9; we follow it.
Choices of ours: B1 and B2 read whole stage outputs, by default the two stages below the last (the
code splits ResNet50's 3rd stage after its first block); the default widths scale with the backbone
(the B2 stage's width for SPG-B, a quarter of the last stage's for SPG-C: 1024 and 512 at ResNet50);
the fallback counts pixels at the input resolution, whatever it is (the code's is 224×224).
Defaults: the code's thresholds, all in the survey's grid: (δ1h, δ1l) = (0.7, 0.01),
(δ2h, δ2l) = (0.5, 0.05), (δ3h, δ3l) = (0.7, 0.1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from histocam.maps.normalize import minmax_normalize
from histocam.maps.normalize import upsample as upsample_maps
from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod, image_loss
from histocam.methods.catalog import register_method

IGNORE = -1.0  # target value of the pixels between δ_l and δ_h


class SPGConfig(ClassifierConfig):
    name: str = "spg"
    delta1_h: float = Field(0.7, ge=0, le=1, description="FG threshold on SPG-A's map (B2 targets)")
    delta1_l: float = Field(0.01, ge=0, le=1, description="BG threshold on SPG-A's map (B2 targets)")
    delta2_h: float = Field(0.5, ge=0, le=1, description="FG threshold on σ(B2) (B1 targets)")
    delta2_l: float = Field(0.05, ge=0, le=1, description="BG threshold on σ(B2) (B1 targets)")
    delta3_h: float = Field(0.7, ge=0, le=1, description="FG threshold on fused SPG-B (C targets)")
    delta3_l: float = Field(0.1, ge=0, le=1, description="BG threshold on fused SPG-B (C targets)")
    b1_stage: int = Field(-3, description="encoder stage of branch B1 (negative: from the deepest)")
    b2_stage: int = Field(-2, description="encoder stage of branch B2 (negative: from the deepest)")
    b_channels: int | None = Field(None, ge=1, description="width of the SPG-B convolutions "
                                   "(None: the B2 stage's width, 1024 at ResNet50)")
    c_channels: int | None = Field(None, ge=1, description="width of the SPG-C convolution "
                                   "(None: a quarter of the last stage's width, 512 at ResNet50)")
    fallback_min_pixels: int = Field(30, ge=0, description="fewer foreground pixels than this: "
                                     "the FG threshold becomes fallback_ratio · max (0: never)")
    fallback_ratio: float = Field(0.7, ge=0, le=1, description="FG threshold of the fallback, "
                                  "relative to the map's maximum")


def guidance_targets(prob: torch.Tensor, high: float, low: float, min_pixels: int = 0,
                     ratio: float = 0.7) -> torch.Tensor:
    """Pixel targets of maps ``prob`` (B×H×W in [0, 1]): 1 where > ``high``, 0 where < ``low``
    (background wins where both hold), ``IGNORE`` elsewhere; an image with fewer than
    ``min_pixels`` pixels above ``high`` uses ``ratio`` · its maximum as its FG threshold."""
    peak = prob.flatten(1).amax(dim=1).view(-1, 1, 1)
    fg = prob > high
    few = fg.flatten(1).sum(dim=1).view(-1, 1, 1) < min_pixels
    fg = torch.where(few, prob > ratio * peak, fg)
    target = torch.full_like(prob, IGNORE)
    target[fg] = 1.0
    target[prob < low] = 0.0
    return target


def guided_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE of B×H×W logits over the pixels whose target is not ``IGNORE`` (0 if none)."""
    valid = target != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[valid].float(), target[valid].float())


class SPGHead(nn.Module):
    def __init__(self, channels: list[int], num_classes: int, b_stages: tuple[int, int],
                 b_width: int, c_width: int) -> None:
        super().__init__()
        self.b_stages = b_stages
        self.classifier = nn.Conv2d(channels[-1], num_classes, 1)  # SPG-A
        self.b1 = nn.Sequential(nn.Conv2d(channels[b_stages[0]], b_width, 3, padding=1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(channels[b_stages[1]], b_width, 3, padding=1), nn.ReLU())
        self.b_shared = nn.Sequential(nn.Conv2d(b_width, b_width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(b_width, 1, 1))
        self.c = nn.Sequential(nn.Conv2d(channels[-1], c_width, 3, padding=1), nn.ReLU(),
                               nn.Conv2d(c_width, 1, 1))


@register_method("spg", family="erasing", paper="Zhang et al., ECCV 2018",
                 summary="A classifier whose confident map pixels, by two thresholds, supervise "
                 "pixel branches on intermediate and top stages.",
                 map="class map of the classifier (min–max)")
class SPG(WSOLMethod):
    Config = SPGConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        c = self.config
        stages = self.encoder.channels
        n = len(stages)
        picked = []
        for key in ("b1_stage", "b2_stage"):
            i = getattr(c, key)
            if not -n <= i < n or i % n == n - 1:
                raise ValueError(f"SPG {key}={i}: must index one of the {n - 1} stages below the "
                                 f"last of {c.backbone.name} (it has {n} stages; a ViT has 1)")
            picked.append(i % n)
        b_width = c.b_channels or stages[picked[1]]
        c_width = c.c_channels or max(1, channels // 4)
        return SPGHead(stages, num_classes, tuple(picked), b_width, c_width)

    def head_forward(self, features):
        h = self.head
        maps = h.classifier(features[-1])
        b1 = h.b_shared(h.b1(features[h.b_stages[0]]))[:, 0]
        b2 = h.b_shared(h.b2(features[h.b_stages[1]]))[:, 0]
        return MethodOutput(maps.mean(dim=(2, 3)), features, maps,
                            {"b1": b1, "b2": b2, "c": h.c(features[-1])[:, 0]})

    def guidance(self, output: MethodOutput, labels: torch.Tensor, size: tuple[int, int]
                 ) -> dict[str, torch.Tensor]:
        """The pixel targets of B2, B1 and C at ``size`` (module docstring, steps 1–3)."""
        c = self.config
        fallback = (c.fallback_min_pixels, c.fallback_ratio)
        with torch.no_grad():
            raw = upsample_maps(self.class_maps(output, labels).float(), size, clamp=False)
            attention = minmax_normalize(raw, relu=False)  # after upsampling: spans [0, 1]
            p2 = torch.sigmoid(upsample_maps(output.extras["b2"].float(), size, clamp=False))
            p1 = torch.sigmoid(upsample_maps(output.extras["b1"].float(), size, clamp=False))
            return {"b2": guidance_targets(attention, c.delta1_h, c.delta1_l, *fallback),
                    "b1": guidance_targets(p2, c.delta2_h, c.delta2_l, *fallback),
                    "c": guidance_targets((p1 + p2) / 2, c.delta3_h, c.delta3_l, *fallback)}

    def loss(self, batch: dict[str, Any], output: MethodOutput
             ) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["label"].to(output.logits.device)
        ce = image_loss(output.logits, labels, self.config.image_loss)
        size = self.guidance_size(batch, output)
        targets = self.guidance(output, labels, size)
        parts = {"ce": float(ce.detach())}
        total = ce
        for name in ("b2", "b1", "c"):
            logits = upsample_maps(output.extras[name], size, clamp=False)
            term = guided_bce(logits, targets[name])
            parts[f"spg_{name}"] = float(term.detach())
            total = total + term
        return total, parts

    def guidance_size(self, batch: dict[str, Any], output: MethodOutput) -> tuple[int, int]:
        """Where the guidance is compared: the input size (``batch["image"]``; without it, the
        finest stage's grid times its stride)."""
        if "image" in batch:
            return tuple(batch["image"].shape[-2:])
        f, stride = output.features[0], self.encoder.reductions[0]
        return (f.shape[-2] * stride, f.shape[-1] * stride)
