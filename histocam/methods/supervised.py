"""Fully supervised upper bound (not a WSOL method): the same encoder with the image classifier of
CAM and a 1×1-convolution foreground/background pixel head trained on the training images' *pixel
masks* (cross-entropy over every pixel of images that have a mask, logits upsampled bilinearly to
the mask). Its map is the softmax foreground probability, as the seed papers' U-Net reference
(PixelCAM Table 1) is used: the localisation a weakly supervised method should approach."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from histocam.methods.base import MethodOutput, WSOLMethod, foreground_probability, image_loss
from histocam.methods.catalog import register_method


def mask_cross_entropy(pixel_logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Mean FG/BG cross-entropy over every pixel of the batch's images that have a mask, the
    B×2×h×w logits bilinear to the mask size; pixels of an ignore mask (``batch["ignore"]``) do
    not count. Zero (with a graph) when no image has a mask."""
    has = batch["has_mask"].bool().to(pixel_logits.device)
    if not bool(has.any()):
        return pixel_logits.sum() * 0.0
    masks = batch["mask"].to(pixel_logits.device)[has]
    target = (masks > 0.5).long()
    if "ignore" in batch:
        target[batch["ignore"].to(pixel_logits.device)[has].bool()] = -1
    logits = pixel_logits[has].float()
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    if not bool((target >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=-1)


@register_method("supervised", family="supervised", paper="upper bound, PixelCAM Table 1",
                 summary="A pixel head trained on the pixel masks: the bound a weakly "
                 "supervised map should approach.",
                 map="foreground probability")
class Supervised(WSOLMethod):
    probability_maps = True

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        return nn.ModuleDict({"classifier": nn.Linear(channels, num_classes),
                              "pixels": nn.Conv2d(channels, 2, kernel_size=1)})

    def head_forward(self, features):
        f = features[-1]
        logits = self.head["classifier"](f.mean(dim=(2, 3)))
        return MethodOutput(logits, features, None, {"pixel_logits": self.head["pixels"](f)})

    def loss(self, batch, output):
        ce = image_loss(output.logits, batch["label"], self.config.image_loss)
        pixel = mask_cross_entropy(output.extras["pixel_logits"], batch)
        return ce + pixel, {"ce": float(ce.detach()), "pixel": float(pixel.detach())}

    def localize_view(self, images, classes, upsample: bool = True):
        output = self(images)
        size = tuple(images.shape[-2:]) if upsample else None
        return output.logits, foreground_probability(output.extras["pixel_logits"], size)
