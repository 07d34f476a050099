"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, eq. 19 with the exponential score): with g the
gradient of the class score, α_k(i, j) = g² / (2 g² + Σ_ab A_k(a, b) · g³) (0 where g = 0) and
w_k = Σ_ij α_k(i, j) · ReLU(g(i, j)); map = ReLU(Σ_k w_k A_k)."""

from __future__ import annotations

import torch

from histocam.maps.topdown_cam import CAMContext, TopDownCAM

EPS = 1e-6


def gradcampp_weights(activations: torch.Tensor, g: torch.Tensor, g2: torch.Tensor,
                      g3: torch.Tensor) -> torch.Tensor:
    """B×K weights from activations and (possibly averaged) first/second/third-order terms."""
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g3 + EPS)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return (alpha * torch.relu(g)).sum(dim=(2, 3))


class GradCAMPlusPlus(TopDownCAM):
    def layer_maps(self, ctx: CAMContext):
        maps = []
        for a, g in zip(ctx.activations, ctx.gradients()):
            w = gradcampp_weights(a, g, g**2, g**3)
            maps.append((w[:, :, None, None] * a).sum(1))
        return maps
