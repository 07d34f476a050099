"""TS-CAM: token semantic coupled attention map (Gao et al., ICCV 2021), on a ViT (DeiT).

With a ViT of L blocks and H heads, P prefix tokens (class token first, DeiT's distillation token
next) and N = h·w patch tokens:

- semantic-agnostic attention map: the attention of the class token to each patch token,
  averaged over the heads and over all L blocks,
  A*_j = 1/(L·H) Σ_l Σ_h softmax(q_cls^{l,h} · k^{l,h} / √d)_j, j a patch token;
- semantic re-allocation branch: the patch tokens after the final norm, reshaped to the h×w grid,
  go through a convolution to K channels: the semantic-aware maps T_k (K×h×w); their global
  average is the logit of class k, trained with the image loss (cross-entropy in the paper);
- semantic coupling module: the map of class k is the element-wise product M_k = A* ⊙ T_k.

The three parts are named as in the paper's framework (its Fig. 3); its text was not at hand
here, so its equation numbers are not cited. Choices left open, taken from the authors' code: the
convolution is 3×3 with padding 1 (``head_kernel``); A* is a mean over blocks (their code sums, a
constant factor that min–max removes). The map is min–max normalised without ReLU (docs/protocol.md, "Maps").
A method composed around TS-CAM (``head_forward`` on encoder features) gets its logits, which need
no attention, but no built-in map.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method
from histocam.models.backbones import Encoder


class TSCAMConfig(ClassifierConfig):
    name: str = "tscam"
    head_kernel: int = Field(3, ge=1, description="kernel size of the convolution from the patch-"
                             "token grid to the K semantic-aware maps (odd; 3 in the authors' code)")

    @field_validator("head_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"head_kernel must be odd (same-size maps), got {value}")
        return value


def require_vit(encoder: Encoder, method: str) -> None:
    """A transformer-family method needs a ViT encoder (its tokens and attention)."""
    if not encoder.vit:
        raise ValueError(f"method {method!r} needs a ViT backbone (DeiT: deit_tiny_patch16_224, "
                         "deit_small_patch16_224, deit_base_patch16_224); the backbone is a CNN: "
                         "set method.backbone.name")


def patch_grid(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """B×(prefix + h·w [+ extra])×D tokens -> the patch tokens as a B×D×h×w map."""
    h, w = grid
    patches = tokens[:, prefix : prefix + h * w]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def class_token_attention(attentions: list[torch.Tensor], prefix: int) -> torch.Tensor:
    """TS-CAM's A*: attention of the class token (row 0) to the patch tokens, averaged over heads
    and blocks; ``attentions``: one B×heads×N×N per block. Returns B×(N - prefix)."""
    return torch.stack([a[:, :, 0, prefix:].mean(dim=1) for a in attentions]).mean(dim=0)


@register_method("tscam", family="transformer", paper="Gao et al., ICCV 2021",
                 summary="ViT class-token attention averaged over heads and blocks, coupled with "
                 "per-class maps of a convolution on the patch tokens.",
                 map="class-token attention × semantic-aware patch map (min–max)")
class TSCAM(WSOLMethod):
    Config = TSCAMConfig

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        require_vit(self.encoder, self.method_name)
        k = self.config.head_kernel
        return nn.Conv2d(channels, num_classes, k, padding=k // 2)

    def head_forward(self, features):
        """Semantic re-allocation: logits = GAP of the semantic-aware maps (no built-in map here:
        the coupling needs the attention, see ``forward``)."""
        semantic = self.head(features[-1])
        return MethodOutput(semantic.mean(dim=(2, 3)), features,
                            extras={"semantic_maps": semantic})

    def forward(self, images: torch.Tensor) -> MethodOutput:
        tokens, attentions = self.encoder.vit_blocks(images)
        prefix, grid = self.encoder.model.num_prefix_tokens, self.encoder.vit_grid(images)
        output = self.head_forward([patch_grid(tokens[-1], prefix, grid)])
        agnostic = class_token_attention(attentions, prefix).view(-1, 1, *grid)
        output.maps = agnostic * output.extras["semantic_maps"]
        output.extras["attention_map"] = agnostic[:, 0]
        return output
