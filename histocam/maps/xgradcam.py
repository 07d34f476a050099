"""XGrad-CAM (Fu et al., BMVC 2020, eq. 15): w_k = Σ_ij (A_k(i, j) / Σ_ab A_k(a, b)) · ∂y_c/∂A_k(i, j);
map = ReLU(Σ_k w_k A_k)."""

from __future__ import annotations

from histocam.maps.topdown_cam import CAMContext, TopDownCAM

EPS = 1e-7


class XGradCAM(TopDownCAM):
    def layer_maps(self, ctx: CAMContext):
        maps = []
        for a, g in zip(ctx.activations, ctx.gradients()):
            w = (g * a / (a.sum(dim=(2, 3), keepdim=True) + EPS)).sum(dim=(2, 3))
            maps.append((w[:, :, None, None] * a).sum(1))
        return maps
