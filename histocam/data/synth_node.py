"""Lymph-node-like (CAMELYON-like) tiles: normal tissue vs metastatic tumour clusters.

Normal: densely packed small dark lymphocytes, paler sinuses with sparse cells, some fat; no
foreground at all (an all-background mask: the fully negative samples of NEGEV). Tumour: clusters of
larger, paler, pleomorphic tumour cells with vesicular chromatin and visible nucleoli and more
cytoplasm, covering 20–100% of the tile. Rendered with a different stain distribution than the colon
domain (bluer haematoxylin, lighter eosin), which is an out-of-distribution shift in itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from histocam.data.synth_common import (
    E_SOURCE,
    H_SOURCE,
    Nuclei,
    StainStyle,
    jittered_grid,
    make_nuclei,
    render_rgb,
    smooth_noise,
    stamp_nuclei,
    unit,
)

NODE_STYLE = StainStyle(unit(H_SOURCE + np.array([0.10, 0.0, 0.12])),
                        unit(E_SOURCE + np.array([0.06, 0.0, 0.10])), gain_h=1.1, gain_e=0.8)


def _tumour_region(rng, size: int, fraction: float) -> np.ndarray:
    """A smooth blob field thresholded at the quantile that gives ``fraction`` of the tile."""
    if fraction >= 0.995:
        return np.ones((size, size), bool)
    field = smooth_noise(rng, size, rng.integers(2, 5)) + 0.35 * smooth_noise(rng, size, 9)
    return field > np.quantile(field, 1 - fraction)


def render_node(rng: np.random.Generator, label: int, size: int, knobs) -> tuple[np.ndarray, np.ndarray]:
    scale = size / 256
    tumour = (_tumour_region(rng, size, float(rng.uniform(0.2, 1.0))) if label == 1
              else np.zeros((size, size), bool))
    sinus = (np.abs(smooth_noise(rng, size, 4)) < rng.uniform(0.04, 0.14)) & ~tumour
    fat = np.zeros((size, size), bool)
    if rng.random() < 0.5:
        fy, fx = rng.uniform(0, size, 2)
        n = rng.integers(3, 12)
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(n):
            cy, cx = fy + rng.normal(0, 22 * scale), fx + rng.normal(0, 22 * scale)
            fat |= np.hypot(yy - cy, xx - cx) < rng.uniform(8, 17) * scale
        fat &= ~tumour
    fat_edge = fat & ~ndimage.binary_erosion(fat, iterations=max(1, int(scale)))

    conc_e = (0.22 * (1 + 0.25 * smooth_noise(rng, size, 10))).astype(np.float32)
    conc_e = np.where(sinus, 0.30, conc_e)
    contrast = knobs.contrast
    conc_e = np.where(tumour, 0.22 + 0.22 * contrast + 0.05 * smooth_noise(rng, size, 16), conc_e)
    conc_h = np.where(tumour, 0.08, 0.07).astype(np.float32)
    conc_e = np.where(fat, 0.0, conc_e)
    conc_e = np.where(fat_edge, 0.35, conc_e)
    conc_h = np.where(fat, 0.0, conc_h).astype(np.float32)

    groups = []
    # lymphocytes: dense small dark round nuclei, sparse in sinuses, absent in fat and tumour
    ly, lx = jittered_grid(rng, size, 6.2 * scale, jitter=0.4)
    iy, ix = ly.astype(int), lx.astype(int)
    keep = ~fat[iy, ix] & ~tumour[iy, ix] & ((~sinus[iy, ix]) | (rng.random(ly.size) < 0.15))
    n = int(keep.sum())
    groups.append(make_nuclei(rng, ly[keep], lx[keep], 2.3 * scale * rng.uniform(0.85, 1.15, n),
                              2.1 * scale * rng.uniform(0.85, 1.15, n), rng.uniform(0, np.pi, n),
                              rng.uniform(1.05, 1.35, n)))
    if tumour.any():
        gap = knobs.nuclear_size_gap
        ty, tx = jittered_grid(rng, size, 12.5 * scale * (1 + 0.3 * gap), jitter=0.35)
        keep = tumour[ty.astype(int), tx.astype(int)]
        n = int(keep.sum())
        base = 3.2 * scale * (1 + 0.6 * gap)
        groups.append(make_nuclei(
            rng, ty[keep], tx[keep], base * rng.uniform(1.0, 1.7, n), base * rng.uniform(0.8, 1.3, n),
            rng.uniform(0, np.pi, n), rng.uniform(0.55, 0.85, n), rim=rng.uniform(0.5, 0.9, n),
            nucleolus=rng.random(n) < 0.8,
        ))
        # a few lymphocytes infiltrate the tumour
        m = rng.poisson(tumour.sum() / (900 * scale * scale))
        py, px = np.nonzero(tumour)
        pick = rng.choice(py.size, m)
        groups.append(make_nuclei(rng, py[pick] + 0.5, px[pick] + 0.5, 2.3 * scale, 2.1 * scale,
                                  0.0, rng.uniform(1.05, 1.35, m)))
    # macrophages in sinuses: pale large nuclei
    sy, sx = np.nonzero(sinus)
    if sy.size:
        m = int(sy.size / (350 * scale * scale))
        pick = rng.choice(sy.size, m)
        groups.append(make_nuclei(rng, sy[pick] + 0.5, sx[pick] + 0.5, 3.0 * scale, 2.4 * scale,
                                  rng.uniform(0, np.pi, m), rng.uniform(0.45, 0.65, m), rim=0.5))
    nuclear = stamp_nuclei(conc_h, Nuclei.concat(*groups), rng)
    conc_e = np.where(nuclear, conc_e * 0.6, conc_e).astype(np.float32)
    image = render_rgb(conc_h, conc_e, NODE_STYLE, rng, variation=knobs.stain_variation,
                       shift=knobs.stain_shift)
    return image, tumour
