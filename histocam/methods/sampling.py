"""Pseudo-label pixel sampling from teacher CAMs (PixelCAM App. J.3; NEGEV §2; docs/protocol.md,
"Method facts").

Each sampler turns B×H×W teacher maps in [0, 1] into B×H×W pseudo labels: 1 = foreground seed,
0 = background seed, ``IGNORE`` = unlabelled.
- ``pb`` (probability-based): n foreground pixels drawn without replacement with probability ∝ CAM,
  n background ∝ 1 − CAM, redrawn at every call; a pixel drawn as both is ignored (conflict).
- ``th`` (threshold-based): Otsu's threshold of each map; n pixels drawn uniformly inside
  (CAM ≥ t, foreground) and n outside (background).
- ``static``: the n highest-CAM pixels are foreground and the n lowest background, fixed (NEGEV's
  ablation of stochastic sampling).
Fully negative images (``negative`` mask, e.g. CAMELYON16 normal patches) get background seeds only:
n uniform ones, or every pixel with ``negative_all_background``. Every image draws its own n seeds
per region (fewer only where its region has fewer pixels).

The seed loss reads seeds as B×2×H×W weights (channel 0 background, 1 foreground): the one-hot of
drawn labels (``one_hot_seeds``), or each pixel's probability of being drawn (``expected_seeds``),
which gives the drawn seeds' loss in expectation without their sampling noise.
"""

from __future__ import annotations

from typing import Literal

import torch

IGNORE = -1
Sampler = Literal["pb", "th", "static"]


def _draw(weights: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Up to ``n`` indices per row drawn without replacement with probability ∝ weights.

    Each row draws min(n, its number of positive weights) on its own (a sparse map does not lower
    the count of the other images). Gumbel-top-k: the n largest of log w + Gumbel noise are a draw
    without replacement ∝ w (Kool et al., ICML 2019). Returns B×n indices, -1 where nothing was
    drawn.
    """
    b, m = weights.shape
    if n == 0 or m == 0:
        return torch.full((b, n), -1, dtype=torch.long, device=weights.device)
    u = torch.rand(weights.shape, generator=generator, device=weights.device if generator is None
                   else generator.device).to(weights.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    keys = torch.where(weights > 0, weights.float().clamp_min(1e-30).log() + gumbel,
                       torch.full_like(gumbel, float("-inf")))
    k = min(n, m)
    values, idx = keys.topk(k, dim=1)
    idx = torch.where(torch.isfinite(values), idx, torch.full_like(idx, -1))
    if k < n:
        idx = torch.cat([idx, idx.new_full((b, n - k), -1)], dim=1)
    return idx


def otsu_threshold(maps: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold (maximal between-class variance) of each B×H×W map in [0, 1] -> B."""
    b = maps.shape[0]
    idx = (maps.reshape(b, -1).clamp(0, 1) * (bins - 1)).round().long()
    hist = torch.zeros(b, bins, device=maps.device).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=torch.float))
    p = hist / hist.sum(1, keepdim=True)
    levels = torch.arange(bins, device=maps.device, dtype=torch.float) / (bins - 1)
    w0 = p.cumsum(1)
    mu = (p * levels).cumsum(1)
    mu_t = mu[:, -1:]
    between = (mu_t * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp(min=1e-12)
    t = between.argmax(1)
    return (t.float() + 1) / (bins - 1)  # foreground: level above the split


def _region_weights(cams: torch.Tensor, flat: torch.Tensor,
                    sampler: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B×(H·W) weights that the foreground and background seeds of a random sampler are drawn ∝:
    the map and 1 − map (``pb``), or the inside and outside of its Otsu region (``th``)."""
    if sampler == "pb":
        return flat, 1.0 - flat
    if sampler == "th":
        inside = flat >= otsu_threshold(cams)[:, None]
        return inside.float(), (~inside).float()
    raise ValueError(f"unknown sampler {sampler!r} (pb, th or static)")


def sample_pseudo_labels(cams: torch.Tensor, n: int, sampler: Sampler = "pb", *,
                         negative: torch.Tensor | None = None,
                         negative_all_background: bool = False,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """B×H×W pseudo labels in {IGNORE, 0, 1} from teacher maps ``cams`` (B×H×W in [0, 1])."""
    b, h, w = cams.shape
    flat = cams.reshape(b, -1).float().clamp(0, 1)
    if sampler == "static":
        order = flat.argsort(dim=1, descending=True)
        fg_idx, bg_idx = order[:, :n], order[:, -n:] if n else order[:, :0]
    else:
        fg_w, bg_w = _region_weights(cams, flat, sampler)
        fg_idx = _draw(fg_w, n, generator)
        bg_idx = _draw(bg_w, n, generator)
    if negative is not None:
        negative = negative.to(cams.device).bool()
        fg_idx[negative] = -1
        uniform = _draw(torch.ones_like(flat[negative]), n, generator)
        bg_idx[negative] = uniform
    labels = torch.full((b, h * w), IGNORE, dtype=torch.long, device=cams.device)
    fg_hit = torch.zeros(b, h * w + 1, dtype=torch.bool, device=cams.device)
    bg_hit = torch.zeros_like(fg_hit)
    fg_hit.scatter_(1, torch.where(fg_idx < 0, h * w, fg_idx), True)  # -1 -> dump slot
    bg_hit.scatter_(1, torch.where(bg_idx < 0, h * w, bg_idx), True)
    fg_hit, bg_hit = fg_hit[:, :-1], bg_hit[:, :-1]
    labels[fg_hit & ~bg_hit] = 1
    labels[bg_hit & ~fg_hit] = 0  # drawn as both: stays ignored
    if negative is not None and negative_all_background:
        labels[negative] = 0
    return labels.view(b, h, w)


def one_hot_seeds(labels: torch.Tensor) -> torch.Tensor:
    """B×H×W labels in {IGNORE, 0, 1} -> B×2×H×W seed weights: 1 in the seed's class, 0 elsewhere."""
    classes = torch.arange(2, device=labels.device).view(1, 2, 1, 1)
    return (labels.unsqueeze(1) == classes).float()


def _inclusion(weights: torch.Tensor, n: int) -> torch.Tensor:
    """Probability that each entry of a row is among n drawn ∝ ``weights`` without replacement,
    approximated by min(1, n·w / Σw): exact for n = 1, and as n / (pixels of the region) -> 0
    (PixelCAM's 5 seeds in a 224² map); a region with at most n pixels is drawn whole (1)."""
    positive = (weights > 0).sum(1, keepdim=True)
    share = n * weights / weights.sum(1, keepdim=True).clamp_min(1e-30)
    return torch.where(positive <= n, (weights > 0).float(), share.clamp(max=1.0))


def expected_seeds(cams: torch.Tensor, n: int, sampler: Sampler = "pb", *,
                   negative: torch.Tensor | None = None,
                   negative_all_background: bool = False) -> torch.Tensor:
    """B×2×H×W: the probability that ``sample_pseudo_labels`` (same arguments) labels each pixel
    background (channel 0) or foreground (1). The two regions are drawn independently and a pixel
    drawn in both is ignored, so P(fg) = π_fg (1 − π_bg) and P(bg) = π_bg (1 − π_fg), with π the
    inclusion probability of each draw (``_inclusion``). ``static`` draws nothing at random: its
    seeds are its labels."""
    b, h, w = cams.shape
    if sampler == "static":
        return one_hot_seeds(sample_pseudo_labels(cams, n, "static", negative=negative,
                                                  negative_all_background=negative_all_background))
    flat = cams.reshape(b, -1).float().clamp(0, 1)
    fg_w, bg_w = _region_weights(cams, flat, sampler)
    fg, bg = _inclusion(fg_w, n), _inclusion(bg_w, n)
    if negative is not None:
        negative = negative.to(cams.device).bool()
        fg[negative] = 0.0
        bg[negative] = 1.0 if negative_all_background else _inclusion(torch.ones_like(flat[negative]), n)
    seeds = torch.stack([bg * (1 - fg), fg * (1 - bg)], dim=1)
    return seeds.view(b, 2, h, w)
