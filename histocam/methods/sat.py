"""SAT: spatial-aware token (Wu et al., ICCV 2023, "Spatial-Aware Token for Weakly Supervised Object
Localization"), on a ViT (DeiT-Tiny in PixelCAM's Table 1).

Definition implemented (the paper's abstract and framework figure name the parts; the paper's
full text was not at hand, so each formula below follows the authors' released code, wpy1999/SAT,
``Model/SAT.py`` and ``train.py``, and no equation numbers are cited):

- spatial token: one learnable token s (D) appended to the class and patch tokens at the input
  and carried through all L blocks (the code's token and its own position embedding enter only as
  their sum, so they are one parameter here);
- spatial-query attention, in the last ``spatial_blocks`` = n blocks (3 of DeiT's 12): the spatial
  token queries every token j, m_j = σ(1/H Σ_h q_s^h · k_j^h / √d) (pre-softmax logits, mean over
  heads, sigmoid: a foreground probability); every query's softmax attention is re-weighted by it,
  A'_{h,i,j} = softmax_j(q_i^h · k_j^h / √d) · m_j, without renormalisation;
- localisation map: M = 1/n Σ_{last n blocks} m restricted to the patch tokens, on the h×w grid;
  class-agnostic (the same map for every class);
- classification: the patch tokens after the final norm, reshaped to the grid, through a 3×3
  convolution to K channels and global average pooling (the class token is not used);
- loss: L = CE + λ_a · |1/B Σ_b mean(M_b) − r| + λ_n · 1/B Σ_b mean(M̃_b ⊙ (1 − M̃_b)),
  the batch area loss (the mean foreground fraction of the batch pulled to r, not each image's)
  and the normalisation loss (pushes the map to 0 or 1), M̃ = M smoothed by a fixed 3×3 Gaussian
  kernel with zero padding.

Values the abstract does not give, taken from the authors' code: r = 0.25 (their CUB default;
``area_target``), λ_a = λ_n = 1, the Gaussian kernel (``smoothing_kernel``), the spatial token drawn
from a truncated normal (std 0.02), and one n for both the re-weighted blocks and the averaged
maps (their code hard-codes blocks 9–11 of 12 for both). The spatial token and the convolution form
the head (they train at the head's learning rate). The map is min–max normalised (docs/protocol.md, "Maps").
SAT is installed in its encoder by forward hooks (class docstring), so a method composed around
SAT (sharing its encoder) runs SAT's pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method
from histocam.methods.tscam import require_vit
from histocam.models.backbones import vit_attention


class SATConfig(ClassifierConfig):
    name: str = "sat"
    spatial_blocks: int = Field(3, ge=1, description="the last blocks with spatial-query attention;"
                                " their maps are averaged into the localisation map")
    area_target: float = Field(0.25, gt=0, lt=1, description="r of the batch area loss: the "
                               "batch's mean foreground fraction it pulls the maps to")
    area_weight: float = Field(1.0, ge=0, description="λ_a, weight of the batch area loss")
    norm_weight: float = Field(1.0, ge=0, description="λ_n, weight of the normalisation loss")
    smoothing_size: int = Field(3, ge=1, description="side of the Gaussian kernel that smooths the "
                                "map inside the normalisation loss (odd)")
    smoothing_range: float = Field(6.0, gt=0, description="the kernel spans ± this many standard "
                                   "deviations (plus half a bin): 6 in the authors' code")

    @field_validator("smoothing_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"smoothing_size must be odd (same-size maps), got {value}")
        return value


def spatial_query_attention(logits: torch.Tensor, attention: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """SAT's spatial-query attention. ``logits``: B×H×N×N pre-softmax q·k/√d with the spatial
    token last; ``attention``: their softmax. Returns (the re-weighted attention A · m_j, the
    foreground probability m = σ(mean over heads of the spatial token's logits), B×N)."""
    mask = torch.sigmoid(logits[:, :, -1, :].mean(dim=1))
    return attention * mask[:, None, None, :], mask


def smoothing_kernel(size: int, extent: float) -> torch.Tensor:
    """The normalisation loss's size×size Gaussian: 1-D weights are the standard normal's mass in
    ``size`` equal bins spanning ±(extent + half a bin), the 2-D kernel is the square root of
    their outer product, normalised to sum 1 (as the authors' code builds it)."""
    if size % 2 == 0:
        raise ValueError(f"smoothing_size must be odd, got {size}")
    half = extent + (2 * extent + 1) / size / 2
    edges = torch.linspace(-half, half, size + 1, dtype=torch.float64)
    mass = torch.special.ndtr(edges).diff()
    kernel = torch.outer(mass, mass).sqrt()
    return (kernel / kernel.sum()).float()


def batch_area_loss(maps: torch.Tensor, target: float) -> torch.Tensor:
    """|mean over the batch of each map's mean − target|; ``maps`` B×h×w in [0, 1]."""
    return (maps.flatten(1).mean(dim=1).mean() - target).abs()


def normalization_loss(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Mean of M̃ (1 − M̃) over pixels and images, M̃ = ``maps`` (B×h×w) convolved with
    ``kernel`` (zero padding, same size)."""
    k = kernel.to(maps)
    smooth = F.conv2d(maps[:, None], k[None, None], padding=k.shape[-1] // 2)[:, 0]
    return (smooth * (1 - smooth)).flatten(1).mean(dim=1).mean()


class SATHead(nn.Module):
    """The spatial token, the 3×3 classification convolution and the smoothing kernel."""

    def __init__(self, channels: int, num_classes: int, config: SATConfig) -> None:
        super().__init__()
        self.spatial_token = nn.Parameter(torch.zeros(1, 1, channels))
        nn.init.trunc_normal_(self.spatial_token, std=0.02)
        self.conv = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.register_buffer("smoothing", smoothing_kernel(config.smoothing_size,
                                                           config.smoothing_range),
                             persistent=False)


@register_method("sat", family="transformer", paper="Wu et al., ICCV 2023",
                 summary="A spatial token queries the patch tokens in the last ViT blocks; its "
                 "sigmoid scores re-weight the attention and form the map, under area and "
                 "normalisation losses.",
                 map="spatial token's foreground probability, class-agnostic (min–max)")
class SAT(WSOLMethod):
    """SAT lives in its encoder through forward hooks on the ViT blocks (``stage_modules``): the
    first block's input gets the spatial token, the last n blocks' attention is the spatial-query
    attention (their foreground probabilities are recorded), the last block drops the token. So
    the encoder's own pass (``encoder(x)``) is SAT's, and ``head_forward`` classifies its patch
    grid and reads the probabilities of that pass: the standard forward, and a method composed
    around SAT (a PixelCAM student sharing the encoder) run SAT as it is."""

    Config = SATConfig

    def __init__(self, config: SATConfig, num_classes: int, *, encoder=None) -> None:
        super().__init__(config, num_classes, encoder=encoder)
        if getattr(self.encoder, "spatial_token_hooks", None):
            raise ValueError("sat: this encoder already carries a SAT spatial token (one SAT per "
                             "encoder)")
        blocks = self.encoder.stage_modules()
        self._probabilities: list[torch.Tensor] = []
        hooks = [blocks[0].register_forward_pre_hook(self._append_spatial_token)]
        hooks += [block.attn.register_forward_hook(self._spatial_query)
                  for block in blocks[len(blocks) - config.spatial_blocks :]]
        hooks.append(blocks[-1].register_forward_hook(self._drop_spatial_token))
        self.encoder.spatial_token_hooks = hooks

    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        require_vit(self.encoder, self.method_name)
        depth = len(self.encoder.model.blocks)
        if self.config.spatial_blocks > depth:
            raise ValueError(f"sat: spatial_blocks={self.config.spatial_blocks} but the backbone "
                             f"{self.config.backbone.name} has {depth} blocks")
        return SATHead(channels, num_classes, self.config)

    # --- the hooks: one pass of the encoder
    def _append_spatial_token(self, block, args):
        self._probabilities = []
        tokens = args[0]
        spatial_token = self.head.spatial_token.to(tokens.dtype).expand(len(tokens), -1, -1)
        return (torch.cat([tokens, spatial_token], dim=1), *args[1:])

    def _spatial_query(self, attn, args, output):
        def reweight(logits, attention):
            attention, probability = spatial_query_attention(logits, attention)
            self._probabilities.append(probability)
            return attention

        return vit_attention(attn, args[0], reweight)[0]

    def _drop_spatial_token(self, block, args, output):
        return output[:, :-1]

    def head_forward(self, features):
        """Logits from the patch grid; the map from the probabilities the encoder's latest pass
        recorded (its images must be these features' images)."""
        grid = features[-1]
        if (len(self._probabilities) != self.config.spatial_blocks
                or self._probabilities[0].shape[0] != grid.shape[0]):
            raise ValueError("sat: the map comes from the spatial token's pass through this "
                             "method's encoder: run the encoder on these images first")
        semantic = self.head.conv(grid)
        prefix = self.encoder.model.num_prefix_tokens
        spatial = torch.stack(self._probabilities).mean(dim=0)[:, prefix:-1]
        spatial = spatial.reshape(grid.shape[0], *grid.shape[-2:])
        maps = spatial[:, None].expand(-1, self.num_classes, -1, -1)
        return MethodOutput(semantic.mean(dim=(2, 3)), features, maps,
                            extras={"spatial_map": spatial})

    def loss(self, batch, output):
        ce, parts = super().loss(batch, output)
        spatial = output.extras["spatial_map"]
        area = batch_area_loss(spatial, self.config.area_target)
        norm = normalization_loss(spatial, self.head.smoothing)
        parts.update(area=float(area.detach()), norm=float(norm.detach()))
        return ce + self.config.area_weight * area + self.config.norm_weight * norm, parts
