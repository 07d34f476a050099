"""Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ with the first, second and third-order
gradient terms averaged over ``num_samples`` noisy copies of the input, noise N(0, σ²) with
σ = ``noise`` × (max − min) of each image (SmoothGrad's convention). With noise 0 it equals
Grad-CAM++ exactly."""

from __future__ import annotations

import torch

from histocam.maps.gradcampp import gradcampp_weights
from histocam.maps.topdown_cam import CAMContext, TopDownCAM, default_logits


class SmoothGradCAMPlusPlus(TopDownCAM):
    def __init__(self, *args, num_samples: int = 10, noise: float = 0.15,
                 generator: torch.Generator | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples = num_samples
        self.noise = noise
        self.generator = generator

    def layer_maps(self, ctx: CAMContext):
        x = ctx.images
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
        sums = None
        for _ in range(self.num_samples):
            noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
            noisy = (x + noise * self.noise * span).requires_grad_(True)
            logits, activations = self._forward_capture(noisy)
            score = logits.gather(1, ctx.classes[:, None]).sum()
            grads = torch.autograd.grad(score, activations)
            terms = [(g, g**2, g**3) for g in grads]
            sums = terms if sums is None else [tuple(s + t for s, t in zip(a, b))
                                               for a, b in zip(sums, terms)]
        maps = []
        for a, (g, g2, g3) in zip(ctx.activations, sums):
            n = self.num_samples
            w = gradcampp_weights(a, g / n, g2 / n, g3 / n)
            maps.append((w[:, :, None, None] * a.detach()).sum(1))
        return maps

    def _forward_capture(self, x: torch.Tensor):
        if self.forward_fn is not None:
            return self.forward_fn(x)
        captured = []
        handles = [layer.register_forward_hook(
            lambda _m, _i, out: captured.append(out[0] if isinstance(out, (tuple, list)) else out))
            for layer in self.target_layers]
        try:
            with self._hooks_paused():
                logits = default_logits(self.model(x))
        finally:
            for handle in handles:
                handle.remove()
        return logits, captured
