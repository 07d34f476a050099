"""HaS, Hide-and-Seek (Singh & Lee, ICCV 2017; survey §2.2.1, "Data augmentation methods").

Training images are cut into a regular grid of S×S patches (S = ``grid_size`` pixels; the last
row and column of patches are smaller when S does not divide the image) and every patch is hidden
independently with probability p (``drop_rate``), a fresh draw for every image of every batch
(HaS §3.1). Nothing is hidden at evaluation: the network sees whole images, so it has learnt to
find every discriminative part, not only the most discriminative one.

Hidden pixels take the mean colour so that the expected first-layer activation is the same at
training and test time (HaS §3.2). Choice: the mean is the one the encoder normalises with
(``encoder.mean``: the weights' mean, ImageNet's for ImageNet weights), so a hidden pixel is exactly
0 after normalisation, as in the benchmark code of Choe et al. (CVPR 2020); HaS itself uses the
training set's own mean RGB, which for histology differs from ImageNet's.

The network is CAM's (GAP + linear, cam.py); the map is the class activation map (ReLU, min–max).
Defaults from the survey's grid (Table 9): grid size ∈ {8, 16, 32, 44, 56} → 32 and drop rate ∈
{0.2, …, 0.6} → 0.5, HaS's own setting for ILSVRC (HaS-32, p = 0.5).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from histocam.methods.base import ClassifierConfig
from histocam.methods.cam import CAM
from histocam.methods.catalog import register_method


class HaSConfig(ClassifierConfig):
    name: str = "has"
    grid_size: int = Field(32, ge=1, description="side S of the hidden patches in pixels")
    drop_rate: float = Field(0.5, ge=0, le=1,
                             description="probability that each patch is hidden in training")


def hidden_patches(batch: int, height: int, width: int, grid_size: int, drop_rate: float,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """B×1×H×W bool mask, True on hidden pixels: one Bernoulli(``drop_rate``) draw per S×S grid
    cell of every image, cells starting at the top-left corner (partial cells at the far edges)."""
    rows, cols = -(-height // grid_size), -(-width // grid_size)
    cells = torch.rand(batch, 1, rows, cols, device=device) < drop_rate
    pixels = cells.repeat_interleave(grid_size, dim=2).repeat_interleave(grid_size, dim=3)
    return pixels[:, :, :height, :width]


@register_method("has", family="erasing", paper="Singh and Lee, ICCV 2017",
                 summary="CAM trained on images whose random grid patches are hidden.",
                 map="class activation map (ReLU, min–max)")
class HaS(CAM):
    Config = HaSConfig

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Hide patches of ``batch["image"]`` (training only; ``batch["hidden"]`` is the mask)."""
        if not self.training:
            return batch
        images = batch["image"]
        b, _, h, w = images.shape
        hidden = hidden_patches(b, h, w, self.config.grid_size, self.config.drop_rate,
                                images.device)
        fill = self.encoder.mean.to(images.dtype)  # 0 after the encoder's normalisation
        return {**batch, "image": torch.where(hidden, fill, images), "hidden": hidden[:, 0]}
