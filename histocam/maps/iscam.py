"""IS-CAM (Naidu et al., 2020): Score-CAM with each channel's score integrated along the path from
an empty mask to H_k: w_k = (1/N) Σ_{i=1..N} score(X ⊙ (i/N) H_k) (default N = 10, survey Table 4)."""

from __future__ import annotations

import torch

from histocam.maps.scorecam import ScoreCAM


class ISCAM(ScoreCAM):
    def __init__(self, *args, num_samples: int = 10, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples = num_samples

    def channel_scores(self, ctx, images, masks, classes):
        total = torch.zeros(masks.shape[0], device=masks.device)
        for i in range(1, self.num_samples + 1):
            total += ctx.class_scores(images * (masks * (i / self.num_samples))[:, None], classes)
        return total / self.num_samples
