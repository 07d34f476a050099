"""ACoL, adversarial complementary learning (Zhang et al., CVPR 2018, §3; survey §2.2.1, "Data
augmentation methods").

Two classifier branches A and B on the encoder's last feature map F, each two 3×3 convolutions
(``hidden_channels``, ReLU) and a 1×1 convolution to K class maps, scored by global average pooling
(ACoL §3.2; by default half the encoder's width, which gives the 1024 channels of the ResNet50
variant of Choe et al.'s benchmark code, CVPR 2020, and scales down for smaller backbones).
Branch A's map of class c, min–max normalised to Ã_c ∈ [0, 1], marks the discriminative region;
branch B sees F with that region erased: F̃ = F ⊙ 1[Ã_c ≤ δ] (all channels zeroed where Ã_c > δ,
ACoL §3.1). Branch B must then classify from the rest of the object. Loss: CE(A) + CE(B),
both against the image label. The method's logits are branch A's (they do not depend on the
erasing); branch B's are in ``extras["logits_b"]``.

Erased class: the ground-truth class in training (``training_step``), the predicted class of A in
a plain forward pass (the paper's test time). The map of class c (the protocol asks for the
ground-truth class) is the max-fusion of both normalised branch maps, max(Ã_c, B̃_c) (ACoL §3.1),
stored in A's units (``fused_maps``) so that the protocol's min–max gives max(Ã_c, B̃_c) itself;
``eval_erase: given`` (default) computes B̃_c on features erased for c itself, so the map of c
depends on c alone, as in Choe et al.'s code; ``predicted`` erases the predicted class's
region whatever class the map is asked for (identical when the prediction is right). No ReLU before
min–max (docs/protocol.md, "Maps": a built-in map). δ from the survey's grid {0.5, …, 0.9}: 0.6, ACoL's own.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from histocam.maps.normalize import minmax_normalize
from histocam.maps.normalize import upsample as upsample_maps
from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod, image_loss
from histocam.methods.catalog import register_method


class ACoLConfig(ClassifierConfig):
    name: str = "acol"
    delta: float = Field(0.6, ge=0, le=1, description="erasing threshold δ on A's normalised map")
    hidden_channels: int | None = Field(
        None, ge=1, description="width of the two 3×3 convolutions of each branch (None: half "
        "the encoder's last width, 1024 at ResNet50 as in the reference code)")
    eval_erase: Literal["given", "predicted"] = Field(
        "given", description="class erased for a map at evaluation: the class asked for, or the "
        "predicted one")


def branch(channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, num_classes, 1))


def normalized_class_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per image and class min–max of B×K×h×w maps (constant maps -> 0)."""
    b, k, h, w = maps.shape
    return minmax_normalize(maps.float().reshape(b * k, h, w), relu=False).view(b, k, h, w)


def fused_maps(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """max(Ã, B̃) per class, mapped back to A's range: min A + span A · max(Ã, B̃) (span 1 where
    A is constant). An increasing affine map of max(Ã, B̃), so the protocol's min–max turns it into
    max(Ã, B̃) itself, while the stored class maps keep A's units (no double normalisation)."""
    a = maps_a.float()
    low = a.flatten(2).amin(dim=2)[..., None, None]
    span = a.flatten(2).amax(dim=2)[..., None, None] - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    return low + span * torch.maximum(normalized_class_maps(a), normalized_class_maps(maps_b))


def erase_region(features: torch.Tensor, region: torch.Tensor, delta: float) -> torch.Tensor:
    """``features`` B×C×h×w with every channel zeroed where ``region`` (B×h×w in [0, 1]) > δ."""
    keep = (region <= delta).to(features.dtype).unsqueeze(1)
    return features * keep


@register_method("acol", family="erasing", paper="Zhang et al., CVPR 2018",
                 summary="Two classifier branches, the second on features with the first's "
                 "discriminative region erased.",
                 map="max of both branches' normalised class maps (min–max)")
class ACoL(WSOLMethod):
    Config = ACoLConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        hidden = self.config.hidden_channels or max(1, channels // 2)
        return nn.ModuleDict({"a": branch(channels, hidden, num_classes),
                              "b": branch(channels, hidden, num_classes)})

    def forward(self, images: torch.Tensor, erase_classes: torch.Tensor | None = None
                ) -> MethodOutput:
        return self.head_forward(self.encoder(images), erase_classes)

    def head_forward(self, features, erase_classes: torch.Tensor | None = None) -> MethodOutput:
        """``erase_classes``: the class whose region B does not see, one per image (None: A's
        prediction)."""
        f = features[-1]
        maps_a = self.head["a"](f)
        logits_a = maps_a.mean(dim=(2, 3))
        if erase_classes is None:
            erase_classes = logits_a.argmax(dim=1)
        norm_a = normalized_class_maps(maps_a.detach())
        index = torch.arange(f.shape[0], device=f.device)
        region = norm_a[index, erase_classes.to(f.device)]
        erased = erase_region(f, region, self.config.delta)
        maps_b = self.head["b"](erased)
        fused = fused_maps(maps_a.detach(), maps_b.detach())
        return MethodOutput(logits_a, features, fused,
                            {"logits_b": maps_b.mean(dim=(2, 3)), "maps_a": maps_a,
                             "maps_b": maps_b, "erased": erased, "region": region})

    def training_step(self, batch: dict[str, Any]
                      ) -> tuple[torch.Tensor, dict[str, float], MethodOutput]:
        output = self(batch["image"], erase_classes=batch["label"])
        loss, parts = self.loss(batch, output)
        return loss, parts, output

    def loss(self, batch: dict[str, Any], output: MethodOutput
             ) -> tuple[torch.Tensor, dict[str, float]]:
        ce_a = image_loss(output.logits, batch["label"], self.config.image_loss)
        ce_b = image_loss(output.extras["logits_b"], batch["label"], self.config.image_loss)
        return ce_a + ce_b, {"ce": float(ce_a.detach()), "ce_b": float(ce_b.detach())}

    def localize_view(self, images: torch.Tensor, classes: torch.Tensor,
                      upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        erase = classes if self.config.eval_erase == "given" else None
        output = self(images, erase_classes=erase)
        low = minmax_normalize(self.class_maps(output, classes).float(), relu=False)
        return output.logits, (upsample_maps(low, tuple(images.shape[-2:])) if upsample else low)
