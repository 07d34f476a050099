"""H&E stain colour model in optical-density space (Ruifrok & Johnston, Anal. Quant. Cytol. 2001).

Beer–Lambert: OD = -ln((255·I + 1) / 256) for I in [0, 1], which is exactly invertible (no clipping
of negative concentrations, unlike scikit-image's rgb2hed/hed2rgb round trip). Concentrations are
C = OD · M⁻¹ with M the rows of stain OD vectors (haematoxylin, eosin, DAB/residual).

``hed_augment`` is the HED-space augmentation of Tellez et al. (MedIA 2019): per image and stain,
C' = α·C + β with α ~ U(1−σ, 1+σ), β ~ U(−σ, σ); the only lossy step is the final clip to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

#: Stain OD vectors (rows: H, E, DAB) of Ruifrok & Johnston, as used by scikit-image.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def rgb_to_od(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> optical density (same shape)."""
    return -torch.log((rgb * 255.0 + 1.0) / 256.0)


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_od`` (not clipped)."""
    return (torch.exp(-od) * 256.0 - 1.0) / 255.0


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 3, H, W) stain concentrations (may be negative)."""
    m = torch.as_tensor(HED_FROM_RGB, dtype=rgb.dtype, device=rgb.device)
    return torch.einsum("...chw,cs->...shw", rgb_to_od(rgb), m)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hed`` (not clipped)."""
    m = torch.as_tensor(RGB_FROM_HED, dtype=hed.dtype, device=hed.device)
    return od_to_rgb(torch.einsum("...shw,sc->...chw", hed, m))


def hed_augment(
    rgb: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly rescale and shift H, E and DAB concentrations of (B, 3, H, W) or (3, H, W) RGB."""
    if sigma == 0:
        return rgb
    batch_shape = rgb.shape[:-3]
    shape = (*batch_shape, 3, 1, 1)
    u = torch.rand((2, *shape), generator=generator, dtype=rgb.dtype).to(rgb.device)
    alpha = 1.0 + sigma * (2 * u[0] - 1)
    beta = sigma * (2 * u[1] - 1)
    return hed_to_rgb(rgb_to_hed(rgb) * alpha + beta).clamp_(0.0, 1.0)
