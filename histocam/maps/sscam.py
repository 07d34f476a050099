"""SS-CAM (Naidu & Michael, 2020): Score-CAM with each channel's score averaged over
``num_samples`` noisy masks H_k + δ, δ ~ N(0, σ²) (defaults N = 35, σ = 2, the values of the
survey's Table 4)."""

from __future__ import annotations

import torch

from histocam.maps.scorecam import ScoreCAM


class SSCAM(ScoreCAM):
    def __init__(self, *args, num_samples: int = 35, sigma: float = 2.0,
                 generator: torch.Generator | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples, self.sigma, self.generator = num_samples, sigma, generator

    def channel_scores(self, ctx, images, masks, classes):
        total = torch.zeros(masks.shape[0], device=masks.device)
        for _ in range(self.num_samples):
            noise = torch.randn(masks.shape, generator=self.generator).to(masks.device)
            total += ctx.class_scores(images * (masks + self.sigma * noise)[:, None], classes)
        return total / self.num_samples
