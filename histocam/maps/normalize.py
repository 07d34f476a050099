"""The one implementation of the protocol's map post-processing (docs/protocol.md, "Maps").

CAM and Grad-CAM family: ReLU -> per-image min–max at low resolution (a constant map becomes all
zeros, never NaN) -> bilinear upsampling (``align_corners=False``) to the input size. Built-in pooling
maps: the same without ReLU. PixelCAM/NEGEV: a foreground probability, no min–max, bilinear only.
"""

from __future__ import annotations

import torch

from histocam.data.transforms import resize_maps


def minmax_normalize(cams: torch.Tensor, relu: bool) -> torch.Tensor:
    """Per-image min–max of B×h×w maps to [0, 1] (constant maps -> 0). A map holding NaN or ±inf is
    an error (docs/protocol.md, "Maps"), never silently a zero map."""
    flat = cams.reshape(cams.shape[0], -1)
    bad = ~torch.isfinite(flat).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"map #{int(bad.nonzero()[0, 0])} of the batch is not finite (NaN or inf) "
                         "before min–max normalisation: the model's output diverged")
    if relu:
        cams = cams.clamp(min=0)
        flat = cams.reshape(cams.shape[0], -1)
    low = flat.amin(dim=1).view(-1, 1, 1)
    span = (flat.amax(dim=1).view(-1, 1, 1) - low)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (cams - low) / safe, torch.zeros_like(cams))


def upsample(maps: torch.Tensor, size: tuple[int, int], clamp: bool = True) -> torch.Tensor:
    """B×h×w -> B×H×W, bilinear ``align_corners=False``; ``clamp`` keeps maps in [0, 1] despite
    rounding (off for raw activations)."""
    maps = resize_maps(maps, size)
    return maps.clamp(0.0, 1.0) if clamp else maps


def normalize_cam(cams: torch.Tensor, size: tuple[int, int], relu: bool) -> torch.Tensor:
    """Protocol normalisation of low-resolution class maps B×h×w -> B×H×W in [0, 1]."""
    return upsample(minmax_normalize(cams.float(), relu), size)


def mean_map(maps: list[torch.Tensor], size: tuple[int, int] | None, probability: bool
             ) -> torch.Tensor:
    """The mean of several B×h×w maps in [0, 1] (test-time views, input scales, runs), each
    resized bilinearly to ``size`` (None: the finest of their grids), min–max normalised again
    unless they are probabilities."""
    if size is None:
        size = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    mean = sum(upsample(m.float(), size) for m in maps) / len(maps)
    return mean if probability else minmax_normalize(mean, relu=False)
