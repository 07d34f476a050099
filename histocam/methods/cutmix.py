"""CutMix (Yun et al., ICCV 2019, §3.1; survey §2.2.1, "Data augmentation methods").

A training batch is mixed with a shuffled copy of itself: x̃ = M ⊙ x_A + (1 − M) ⊙ x_B and
ỹ = λ y_A + (1 − λ) y_B (CutMix eq. 1), with M the complement of one box B = (r_x, r_y, r_w, r_h):
λ ~ Beta(α, α), r_w = W √(1 − λ), r_h = H √(1 − λ), centre (r_x, r_y) uniform over the image (eq. 2),
the box clipped to the image. λ is then recomputed as 1 − (area of the clipped box) / (W H), so the
label weight of each image is exactly the fraction of pixels it contributes. One box and one
permutation per batch (as in the authors' code); mixing happens with probability ``cutmix_prob``
per batch, otherwise the batch is unchanged. Nothing is mixed at evaluation.

Loss: the mixed cross-entropy λ CE(z, y_A) + (1 − λ) CE(z, y_B) = −Σ_k ỹ_k log softmax(z)_k (with
``image_loss: bce``, one BCE per class against ỹ). The network is CAM's (GAP + linear, cam.py); the
map is the class activation map (ReLU, min–max). Defaults from the survey's Table 9: α = 1
(λ uniform on [0, 1]), and the mixing probability from its grid {0.5, …, 1} → 1, CutMix's own
ImageNet setting.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from histocam.methods.base import ClassifierConfig, MethodOutput
from histocam.methods.cam import CAM
from histocam.methods.catalog import register_method


class CutMixConfig(ClassifierConfig):
    name: str = "cutmix"
    alpha: float = Field(1.0, gt=0, description="α of the Beta(α, α) the box ratio λ is drawn from")
    cutmix_prob: float = Field(1.0, ge=0, le=1,
                               description="probability that a training batch is mixed")


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of the box of ratio 1 − ``lam`` centred at (cy, cx), clipped to the image:
    sides ⌊H √(1−λ)⌋ × ⌊W √(1−λ)⌋, each half-side ⌊side / 2⌋ on both sides of the centre."""
    ratio = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    return (max(cy - half_h, 0), min(cy + half_h, height),
            max(cx - half_w, 0), min(cx + half_w, width))


def paste_box(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
              box: tuple[int, int, int, int], perm: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste ``box`` of image ``perm[i]`` into image i: (mixed images, soft targets B×K, λ) with
    λ = 1 − box area / image area, the weight of each image's own label."""
    y1, y2, x1, x2 = box
    h, w = images.shape[-2:]
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    own = F.one_hot(labels, num_classes).to(images.dtype)
    return mixed, lam * own + (1.0 - lam) * own[perm], lam


def soft_target_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Cross-entropy (``ce``) or per-class BCE (``bce``) against soft targets B×K."""
    target = target.to(logits.dtype)
    if kind == "ce":
        return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"unknown image loss {kind!r} (ce or bce)")


@register_method("cutmix", family="erasing", paper="Yun et al., ICCV 2019",
                 summary="CAM trained on images with a box pasted from another image of the batch, "
                 "labels mixed by area.",
                 map="class activation map (ReLU, min–max)")
class CutMix(CAM):
    Config = CutMixConfig

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Mix the training batch (module docstring); adds ``soft_label`` (B×K) and ``mix_lambda``."""
        c = self.config
        images = batch["image"]
        if not self.training or images.shape[0] < 2 or float(torch.rand(())) >= c.cutmix_prob:
            return batch
        h, w = images.shape[-2:]
        lam = float(torch.distributions.Beta(c.alpha, c.alpha).sample())
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        perm = torch.randperm(images.shape[0]).to(images.device)
        mixed, soft, lam = paste_box(images, batch["label"], self.num_classes,
                                     cutmix_box(h, w, lam, cy, cx), perm)
        return {**batch, "image": mixed, "soft_label": soft, "mix_lambda": lam}

    def loss(self, batch: dict[str, Any], output: MethodOutput
             ) -> tuple[torch.Tensor, dict[str, float]]:
        if "soft_label" not in batch:
            return super().loss(batch, output)
        ce = soft_target_loss(output.logits, batch["soft_label"].to(output.logits.device),
                              self.config.image_loss)
        return ce, {"ce": float(ce.detach())}

