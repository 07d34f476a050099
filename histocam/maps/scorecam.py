"""Score-CAM (Wang et al., CVPR-W 2020, eqs. 3–8): each channel A_k, upsampled to the input and
min–max normalised to H_k, masks the input; its weight is the softmax score of the target class on
X ⊙ H_k; map = ReLU(Σ_k w_k A_k). One forward per channel, run in chunks of ``chunk_size``.
SS-CAM and IS-CAM change only how a channel's score is obtained (``channel_scores``)."""

from __future__ import annotations

import torch

from histocam.maps.normalize import minmax_normalize, upsample
from histocam.maps.topdown_cam import CAMContext, TopDownCAM


class ScoreCAM(TopDownCAM):
    needs_gradients = False

    def channel_scores(self, ctx: CAMContext, images: torch.Tensor, masks: torch.Tensor,
                       classes: torch.Tensor) -> torch.Tensor:
        """Scores of ``classes`` for images masked by ``masks`` (N×H×W in [0, 1])."""
        return ctx.class_scores(images * masks[:, None], classes)

    def layer_maps(self, ctx: CAMContext):
        maps = []
        size = tuple(ctx.images.shape[-2:])
        for a in ctx.activations:
            a = a.detach()
            b, k = a.shape[:2]
            weights = torch.empty(b * k, device=a.device)
            flat = a.flatten(0, 1)  # (b·k)×h×w, sample-major
            for start in range(0, b * k, self.chunk_size):
                idx = torch.arange(start, min(start + self.chunk_size, b * k), device=a.device)
                sample = idx // k
                masks = minmax_normalize(upsample(flat[idx], size, clamp=False), relu=False)
                weights[idx] = self.channel_scores(ctx, ctx.images[sample], masks,
                                                   ctx.classes[sample]).to(a.device)
            maps.append((weights.view(b, k)[:, :, None, None] * a).sum(1))
        return maps
