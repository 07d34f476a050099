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


#: Macenko et al.'s reference H&E stain matrix (columns: haematoxylin, eosin OD vectors) and the
#: 99th-percentile concentrations of their reference image, the usual normalisation target.
MACENKO_TARGET_STAINS = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MACENKO_TARGET_MAX = np.array([1.9705, 1.0308])


def macenko_stains(rgb: torch.Tensor, od_threshold: float = 0.15, alpha: float = 1.0,
                   min_pixels: int = 100, max_pixels: int = 20_000
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The H and E optical-density vectors of an image and the 99th percentile of each stain's
    concentration (Macenko et al., ISBI 2009).

    ``rgb``: 3×H×W in [0, 1]. Pixels whose OD is above ``od_threshold`` in every channel are
    tissue; the plane of their two main OD directions holds both stains, whose vectors are the
    directions at the ``alpha`` and ``100 − alpha`` percentiles of the angle in that plane (the
    one with the larger red OD is haematoxylin). The maxima are the 99th percentiles of the
    least-squares concentrations of all the image's pixels, as in Macenko et al.'s reference code
    (whose target maxima ``MACENKO_TARGET_MAX`` were measured that way). Each estimate uses at most
    ``max_pixels`` pixels, evenly strided. Returns (3×2 stain matrix, 2 maxima), or None when fewer than
    ``min_pixels`` pixels are tissue (an image of glass has no stains to estimate).
    """
    od = rgb_to_od(rgb.double()).reshape(3, -1)
    tissue = od[:, (od > od_threshold).all(dim=0)]
    if tissue.shape[1] < min_pixels:
        return None
    tissue = tissue[:, :: -(-tissue.shape[1] // max_pixels)]
    _, vectors = torch.linalg.eigh(torch.cov(tissue))
    plane = vectors[:, 1:]  # the two largest eigenvalues (eigh sorts them ascending)
    plane = plane * torch.where(plane[0:1] < 0, -1.0, 1.0).to(plane)  # a positive red component
    projected = plane.T @ tissue
    angle = torch.atan2(projected[1], projected[0])
    low, high = torch.quantile(angle, torch.tensor([alpha / 100, 1 - alpha / 100],
                                                   dtype=angle.dtype))
    first = plane @ torch.stack([torch.cos(low), torch.sin(low)])
    second = plane @ torch.stack([torch.cos(high), torch.sin(high)])
    stains = torch.stack([first, second], dim=1) if first[0] > second[0] else \
        torch.stack([second, first], dim=1)
    every = od[:, :: -(-od.shape[1] // max_pixels)]  # the concentrations of every pixel, glass too
    maxima = torch.quantile(torch.linalg.pinv(stains) @ every, 0.99, dim=1)
    if not bool(torch.isfinite(stains).all() and (maxima > 0).all()):
        return None
    return stains, maxima


def macenko_normalize(rgb: torch.Tensor, target_stains: np.ndarray = MACENKO_TARGET_STAINS,
                      target_max: np.ndarray = MACENKO_TARGET_MAX) -> torch.Tensor:
    """Stain-normalise one 3×H×W RGB image in [0, 1] to the target stains (Macenko et al.):
    each pixel's H and E concentrations, scaled so that their 99th percentiles match the
    target's, are re-coloured with the target's stain vectors. An image whose stains cannot be
    estimated (``macenko_stains`` is None: too little tissue) is returned unchanged."""
    estimate = macenko_stains(rgb)
    if estimate is None:
        return rgb
    stains, maxima = estimate
    # concentrations by least squares (the stains' pseudo-inverse), rescaled to the target's
    # maxima and re-coloured with the target's stains: one 3×3 map of optical densities
    to_target = (torch.as_tensor(target_stains, dtype=stains.dtype)
                 @ torch.diag(torch.as_tensor(target_max, dtype=stains.dtype) / maxima)
                 @ torch.linalg.pinv(stains)).to(rgb.dtype)
    od = rgb_to_od(rgb).reshape(3, -1)
    return od_to_rgb(to_target @ od).reshape(rgb.shape).clamp_(0.0, 1.0)
