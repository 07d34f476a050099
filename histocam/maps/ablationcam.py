"""Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 2): w_k = (y_c − y_c^k) / y_c, where y_c^k is the
class logit with channel k of the target layer set to zero; map = ReLU(Σ_k w_k A_k).

The ablated activations are pushed through the rest of the network either by ``head_fn``
(activation -> logits, used by histocam's own methods) or by re-running the model with a forward
hook that substitutes the target layer's output (standalone use). Runs in chunks."""

from __future__ import annotations

from collections.abc import Callable

import torch

from histocam.maps.topdown_cam import CAMContext, TopDownCAM, default_logits

EPS = 1e-7


class AblationCAM(TopDownCAM):
    needs_gradients = False

    def __init__(self, *args, head_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_fn = head_fn

    def _logits_from(self, layer: int, ablated: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.head_fn is not None:
            return self.head_fn(ablated)
        target = self.target_layers[layer]
        handle = target.register_forward_hook(lambda _m, _i, _o: ablated)
        try:
            with self._hooks_paused():
                return default_logits(self.model(images))
        finally:
            handle.remove()

    def layer_maps(self, ctx: CAMContext):
        maps = []
        base = ctx.logits.detach().gather(1, ctx.classes[:, None])[:, 0]
        for layer, a in enumerate(ctx.activations):
            a = a.detach()
            b, k = a.shape[:2]
            weights = torch.empty(b * k, device=a.device)
            with torch.no_grad():
                for start in range(0, b * k, self.chunk_size):
                    idx = torch.arange(start, min(start + self.chunk_size, b * k), device=a.device)
                    sample, channel = idx // k, idx % k
                    ablated = a[sample].clone()
                    ablated[torch.arange(idx.numel()), channel] = 0
                    logits = self._logits_from(layer, ablated, ctx.images[sample])
                    y = logits.gather(1, ctx.classes[sample][:, None])[:, 0]
                    weights[idx] = ((base[sample] - y) / (base[sample] + EPS)).to(a.device)
            maps.append((weights.view(b, k)[:, :, None, None] * a).sum(1))
        return maps
