"""Colon-like (GlaS-like) tiles: glands in stroma, benign vs malignant by morphology.

Foreground = glands (epithelium + lumen) in both classes, as in GlaS. Benign: round, regular,
well-spaced glands with a single layer of small, aligned basal nuclei, goblet cells. Malignant:
irregular, fused or cribriform glands of uneven thickness, larger nuclei scattered through the
epithelium with random orientation and more size variation, few goblet cells. Stroma and epithelial
cytoplasm have similar colours (``contrast`` scales the difference), so the evidence is
morphological rather than a colour blob.

No tile-global statistic tells the classes apart: both have the same epithelial thickness
distribution, lumen secretion and nuclear darkness, and malignant nuclei are sparser
(``MALIGNANT_AREA_PER_NUCLEUS``) so that the haematoxylin mass per epithelial pixel matches the benign
basal band's (a logistic regression on global colour statistics: benchmarks/probes/colon_diagnosis.py).
What tells them apart is the arrangement and shape of nuclei and glands, which is local to the
glands, as in GlaS. ``generator_version`` (``histocam.data.synthetic``) numbers the renderer.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from histocam.data.synth_common import (
    E_SOURCE,
    H_SOURCE,
    Nuclei,
    StainStyle,
    fibres,
    make_nuclei,
    pixel_grid,
    render_rgb,
    smooth_noise,
    stamp_nuclei,
    unit,
)

#: Epithelial pixels per malignant nucleus (×scale²): the malignant nuclear mass per epithelial
#: pixel matches the benign basal band's, so that the classes do not differ in how much haematoxylin
#: a tile holds (measured in benchmarks/probes/colon_diagnosis.py, part 2).
MALIGNANT_AREA_PER_NUCLEUS = 95.0

COLON_STYLE = StainStyle(unit(H_SOURCE), unit(E_SOURCE), gain_h=1.0, gain_e=1.0)


def _gland_masks(rng, size: int, malignant: bool, target: float) -> np.ndarray:
    """Union of noise-deformed closed shapes until the foreground fraction reaches ``target``.

    Each gland's border is r(θ) = r0 · (1 + Σ_k a_k cos(kθ + φ_k)), k = 2..6, evaluated with complex
    powers of e^{iθ} rather than trigonometric calls. Benign glands are kept apart, malignant ones may
    overlap (fused glands).
    """
    yy, xx = pixel_grid(size)
    mask = np.zeros((size, size), bool)
    covered, goal = 0, target * size * size
    centres: list[tuple[float, float, float]] = []
    scale = size / 256
    for _ in range(120):
        if covered >= goal:
            break
        r0 = rng.uniform(20, 36) * scale * (0.6 + 1.6 * target)
        if malignant:
            r0 *= rng.uniform(0.6, 1.3)
        for _try in range(8):  # aim at tissue not yet covered
            cy, cx = rng.uniform(-0.1, 1.1, 2) * size
            iy, ix = min(max(int(cy), 0), size - 1), min(max(int(cx), 0), size - 1)
            if not mask[iy, ix]:
                break
        gap = (1.0 - 0.25 * target)  # crowded tiles pack glands closer
        if not malignant and any(np.hypot(cy - y, cx - x) < (r0 + r) * gap + 2 * scale
                                 for y, x, r in centres):
            continue  # benign glands are well spaced
        k = np.arange(2, 7)
        amp = rng.uniform(0.0, 0.05 if not malignant else 0.2, k.size) / np.sqrt(k - 1)
        coef = (amp * np.exp(1j * rng.uniform(0, 2 * np.pi, k.size))).astype(np.complex64)
        elong = rng.uniform(1.0, 1.3 if not malignant else 1.7)
        tilt = rng.uniform(0, np.pi)
        box = int(r0 * elong * 1.5) + 2
        y0, y1 = max(int(cy) - box, 0), min(int(cy) + box, size)
        x0, x1 = max(int(cx) - box, 0), min(int(cx) + box, size)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = dy * np.cos(tilt) + dx * np.sin(tilt)
        v = (-dy * np.sin(tilt) + dx * np.cos(tilt)) * elong
        rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
        z = (v + 1j * u) / rho  # e^{iθ}
        zk = z * z
        wobble = np.zeros_like(rho)
        for c in coef:
            wobble += (c * zk).real
            zk = zk * z
        inside = rho < r0 * (1 + wobble)
        before = mask[y0:y1, x0:x1]
        covered += int((inside & ~before).sum())
        before |= inside
        centres.append((cy, cx, r0 * elong))
    return mask


def render_colon(rng: np.random.Generator, label: int, size: int, knobs) -> tuple[np.ndarray, np.ndarray]:
    malignant = label == 1
    scale = size / 256
    target = float(np.clip(0.08 + 0.84 * rng.beta(2.2, 2.2), 0.08, 0.92))
    gland = _gland_masks(rng, size, malignant, target)
    depth = ndimage.distance_transform_edt(gland)
    thick = rng.uniform(10, 17) * scale  # the same epithelial mass in both classes (v2)
    if malignant:  # irregular thickness around the same mean
        thick = thick * (1 + 0.35 * smooth_noise(rng, size, 5))
    epithelium = gland & (depth <= thick)
    if malignant and rng.random() < 0.6:  # cribriform: epithelial bridges split the lumen
        bridges = np.abs(smooth_noise(rng, size, 10)) < 0.12
        epithelium |= gland & bridges & (depth > thick)
    lumen = gland & ~epithelium

    # --- eosin (cytoplasm, stroma) and haematoxylin background fields
    contrast = knobs.contrast
    fib = fibres(rng, size, period=rng.uniform(7, 12) * scale)
    stroma_e = 0.55 * (0.55 + 0.6 * fib) * (1 + 0.15 * smooth_noise(rng, size, 6))
    # epithelial cytoplasm: a little paler and more purple than stroma; `contrast` widens the gap
    cyto_e = 0.55 * (0.8 - 0.3 * contrast) * (1 + 0.1 * smooth_noise(rng, size, 12))
    conc_e = np.where(epithelium, cyto_e, stroma_e).astype(np.float32)
    secretion = np.clip(smooth_noise(rng, size, 8) - 0.2, 0, 1) * 0.4
    conc_e = np.where(lumen, 0.04 + secretion, conc_e)
    conc_h = np.where(epithelium, 0.08 + 0.24 * contrast, 0.05).astype(np.float32)
    conc_h = np.where(lumen, 0.01, conc_h).astype(np.float32)

    # --- nuclei
    ny, nx = np.nonzero(epithelium)
    groups = []
    if ny.size:
        d = depth[ny, nx]
        gy, gx = np.gradient(depth)
        along = np.arctan2(gx[ny, nx], gy[ny, nx])  # (y, x) angle of the inward normal
        size_gap = knobs.nuclear_size_gap
        if malignant:
            n = int(ny.size / (MALIGNANT_AREA_PER_NUCLEUS * scale * scale))
            pick = rng.choice(ny.size, n, replace=False) if n < ny.size else np.arange(ny.size)
            base = 2.6 * scale * (1 + 0.6 * size_gap)
            ry = base * rng.uniform(1.1, 1.9, pick.size)
            rx = base * rng.uniform(0.7, 1.25, pick.size)
            angle = along[pick] + rng.normal(0, 0.6, pick.size)
            dens = rng.uniform(0.95, 1.25, pick.size)
        else:
            basal = (d > 0.25 * thick) & (d < 0.55 * thick)
            idx = np.flatnonzero(basal)
            n = int(idx.size / (9 * scale * scale))
            pick = idx[rng.choice(idx.size, n, replace=False)] if 0 < n < idx.size else idx
            ry = 3.6 * scale * rng.uniform(0.9, 1.15, pick.size)
            rx = 1.7 * scale * rng.uniform(0.9, 1.1, pick.size)
            angle = along[pick] + rng.normal(0, 0.15, pick.size)
            dens = rng.uniform(0.95, 1.25, pick.size)
        groups.append(make_nuclei(rng, ny[pick] + rng.random(pick.size), nx[pick] + rng.random(pick.size),
                                  ry, rx, angle, dens))
    sy, sx = np.nonzero(~gland)
    if sy.size:
        n_fib = int(sy.size / (260 * scale * scale) * rng.uniform(0.6, 1.4))
        n_lym = int(sy.size / (420 * scale * scale) * rng.uniform(0.3, 2.0))
        f = rng.choice(sy.size, n_fib)
        groups.append(make_nuclei(rng, sy[f] + 0.5, sx[f] + 0.5, 3.8 * scale, 1.1 * scale,
                                  rng.uniform(0, np.pi, n_fib), rng.uniform(0.7, 1.0, n_fib)))
        cluster = smooth_noise(rng, size, 5)[sy, sx]
        p = np.exp(3 * cluster)
        l = rng.choice(sy.size, n_lym, p=p / p.sum())
        groups.append(make_nuclei(rng, sy[l] + 0.5, sx[l] + 0.5, 2.1 * scale, 2.0 * scale,
                                  rng.uniform(0, np.pi, n_lym), rng.uniform(1.0, 1.25, n_lym)))
    nuclear = stamp_nuclei(conc_h, Nuclei.concat(*groups), rng)
    conc_e = np.where(nuclear, conc_e * 0.5, conc_e)

    if not malignant or rng.random() < 0.3:  # goblet cells: pale round mucin vacuoles
        gy_, gx_ = np.nonzero(epithelium & (depth > 0.55 * thick))
        n_gob = int(gy_.size / (110 * scale * scale) * (1.0 if not malignant else 0.2))
        if n_gob:
            g = rng.choice(gy_.size, n_gob, replace=False)
            vacuole = np.zeros((size, size), np.float32)
            r = 2.6 * scale * rng.uniform(0.8, 1.2, n_gob)
            stamp_nuclei(vacuole, make_nuclei(rng, gy_[g] + 0.5, gx_[g] + 0.5, r * 1.3, r,
                                              rng.uniform(0, np.pi, n_gob), 1.0), rng)
            goblet = (vacuole > 0.3) & gland
            conc_e = np.where(goblet, 0.07, conc_e)
            conc_h = np.where(goblet & ~nuclear, 0.03, conc_h)
    image = render_rgb(conc_h, conc_e.astype(np.float32), COLON_STYLE, rng,
                       variation=knobs.stain_variation, shift=knobs.stain_shift)
    return image, gland
