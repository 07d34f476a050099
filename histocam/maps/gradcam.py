"""Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1–2): w_k = mean_ij ∂y_c/∂A_k(i, j);
map = ReLU(Σ_k w_k A_k)."""

from __future__ import annotations

from histocam.maps.topdown_cam import CAMContext, TopDownCAM


class GradCAM(TopDownCAM):
    def layer_maps(self, ctx: CAMContext):
        return [(g.mean(dim=(2, 3), keepdim=True) * a).sum(1)
                for a, g in zip(ctx.activations, ctx.gradients())]
