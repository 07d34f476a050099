"""The U-Net-style decoder shared by NEGEV and the U-Net upper bound (docs/protocol.md,
"Method facts").

From the deepest encoder stage up: bilinear upsampling to the next shallower stage's size,
concatenation with that stage (the skip connection), two 3×3 convolutions with BatchNorm and ReLU;
a last block at the input's own size without a skip; a 3×3 convolution to two channels
(background, foreground). Block widths 256/128/64/32/16 (Ronneberger et al., MICCAI 2015, as used by
NEGEV, Belharbi et al., MIDL 2022, §2.1 and App. C.1); an encoder with fewer stages (a ViT has one)
uses the last widths. Upsampling goes to the exact sizes of the skips and of the input, so odd input
sizes (225×199) come out at their own size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DECODER_WIDTHS = (256, 128, 64, 32, 16)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """``forward(features, size)``: encoder stages (shallow to deep) -> B×2×H×W FG/BG logits at
    ``size`` (the input's H×W)."""

    def __init__(self, stage_channels: list[int], widths: tuple[int, ...] = DECODER_WIDTHS) -> None:
        super().__init__()
        n_blocks = len(stage_channels)  # one per skip (all stages but the deepest) + the last
        if n_blocks > len(widths):
            raise ValueError(f"the encoder has {n_blocks} stages but the decoder only "
                             f"{len(widths)} block widths ({list(widths)})")
        widths = tuple(widths[len(widths) - n_blocks:])
        skips = list(stage_channels[-2::-1]) + [0]
        blocks, channels = [], stage_channels[-1]
        for width, skip in zip(widths, skips):
            blocks.append(_block(channels + skip, width))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(channels, 2, 3, padding=1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = features[-1]
        skips = list(features[-2::-1]) + [None]
        for block, skip in zip(self.blocks, skips):
            target = tuple(skip.shape[-2:]) if skip is not None else tuple(size)
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            if skip is not None:
                x = torch.cat([x, skip], dim=1)
            x = block(x)
        return self.out(x)


def input_size(features: list[torch.Tensor], reductions: list[int]) -> tuple[int, int]:
    """The input size implied by the shallowest stage (exact for even sizes); methods that know the
    image pass its size instead."""
    h, w = features[0].shape[-2:]
    return h * reductions[0], w * reductions[0]
