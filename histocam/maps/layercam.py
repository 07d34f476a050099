"""LayerCAM (Jiang et al., IEEE TIP 2021): per position, M = ReLU(Σ_k ReLU(∂y_c/∂A_k) ⊙ A_k).
Several layers are fused as in the paper: each layer's map is min–max normalised and scaled by
tanh(γ · M) (eq. 9, γ = 2), upsampled to the largest layer's size, and combined by the element-wise
maximum."""

from __future__ import annotations

import torch

from histocam.maps.normalize import minmax_normalize, upsample
from histocam.maps.topdown_cam import CAMContext, TopDownCAM


class LayerCAM(TopDownCAM):
    def __init__(self, *args, gamma: float = 2.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gamma = gamma

    def layer_maps(self, ctx: CAMContext):
        return [(torch.relu(g) * a).sum(1) for a, g in zip(ctx.activations, ctx.gradients())]

    def fuse(self, maps):
        if len(maps) == 1:
            return maps[0]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        scaled = [upsample(torch.tanh(self.gamma * minmax_normalize(m, relu=True)), size, clamp=False)
                  for m in maps]
        return torch.stack(scaled).amax(0)
