"""Joint transforms apply one geometry to image, mask and CAM; HED stain model round trip."""

from __future__ import annotations

import numpy as np
import torch

from histocam.data.sample import Sample
from histocam.data.stain import HED_FROM_RGB, hed_augment, hed_to_rgb, rgb_to_hed
from histocam.data.transforms import JointTransform


def _asymmetric_pattern(h: int = 16, w: int = 16) -> np.ndarray:
    """An L-shape plus a dot: no flip or shift maps it onto itself."""
    m = np.zeros((h, w), bool)
    m[2:12, 3] = True
    m[11, 3:9] = True
    m[4, 12] = True
    return m


def test_train_geometry_is_shared_by_image_mask_and_cam() -> None:
    pattern = _asymmetric_pattern()
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0] = pattern * 255
    image[..., 1] = np.arange(16, dtype=np.uint8)[None, :] * 10  # encodes column
    sample = Sample(image, 1, pattern.copy(), "x")
    cam = pattern.astype(np.float32) * 0.8
    t = JointTransform(train=True, resize=16, crop=11, color_jitter=False)
    seen_flips = set()
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        out = t(sample, cam, generator=g)
        red = out["image"][0] > 0.5
        assert out["image"].shape == (3, 11, 11) and out["mask"].shape == (11, 11)
        assert torch.equal(red, out["mask"] > 0.5)
        assert torch.allclose(out["cam"], out["mask"] * 0.8)
        # reproduce the geometry from the same generator draws
        g = torch.Generator().manual_seed(seed)
        top, left = (int(v) for v in torch.randint(6, (2,), generator=g))
        hflip, vflip = (bool(v) for v in torch.rand(2, generator=g) < 0.5)
        expected = pattern[top : top + 11, left : left + 11]
        expected = expected[:, ::-1] if hflip else expected
        expected = expected[::-1] if vflip else expected
        assert np.array_equal(out["mask"].numpy() > 0.5, expected)
        seen_flips.add((hflip, vflip))
    assert len(seen_flips) == 4


def test_eval_resize_only_and_mask_binary() -> None:
    pattern = _asymmetric_pattern(16, 16)
    image = np.repeat(pattern[..., None] * 255, 3, axis=2).astype(np.uint8)
    out = JointTransform(train=False, eval_size=8)(Sample(image, 0, pattern, "y"))
    assert out["image"].shape == (3, 8, 8)
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    # nearest: source index floor(i * 2)
    assert np.array_equal(out["mask"].numpy() > 0.5, pattern[::2, ::2])
    no_mask = JointTransform(train=False, eval_size=8)(Sample(image, 0, None, "z"))
    assert no_mask["has_mask"] is False and no_mask["mask"].sum() == 0


def test_cam_is_resized_with_bilinear_and_cropped() -> None:
    cam = np.arange(4 * 4, dtype=np.float32).reshape(4, 4) / 15
    sample = Sample(np.zeros((7, 11, 3), np.uint8), 0, None, "z")
    out = JointTransform(train=False, eval_size=8)(sample, cam)
    ref = torch.nn.functional.interpolate(torch.from_numpy(cam)[None, None], (8, 8),
                                          mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out["cam"], ref)


def test_hed_round_trip_is_lossless() -> None:
    rgb = torch.rand(3, 3, 7, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(hed_to_rgb(rgb_to_hed(rgb)), rgb, atol=1e-12)
    assert torch.equal(hed_augment(rgb, 0.0), rgb)


def test_hed_matrix_matches_scikit_image() -> None:
    from skimage.color import hed_from_rgb

    assert np.allclose(HED_FROM_RGB, hed_from_rgb, atol=1e-8)


def test_hed_augment_changes_stain_only_within_bounds() -> None:
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(5, 3, 7, 11, generator=g, dtype=torch.float64) * 0.8 + 0.1
    out = hed_augment(rgb, 0.05, generator=g)
    assert out.shape == rgb.shape and out.min() >= 0 and out.max() <= 1
    delta = rgb_to_hed(out) - rgb_to_hed(rgb)
    assert not torch.allclose(out, rgb)
    # each image's change is an affine map per stain channel: alpha in [0.95,1.05], beta in ±0.05
    for b in range(5):
        for c in range(3):
            x = rgb_to_hed(rgb)[b, c].flatten()
            y = (rgb_to_hed(rgb)[b, c] + delta[b, c]).flatten()
            fit = np.polyfit(x.numpy(), y.numpy(), 1)
            assert 0.95 - 1e-6 <= fit[0] <= 1.05 + 1e-6
            assert abs(fit[1]) <= 0.05 + 1e-6


def _stained(stains: np.ndarray, h: float, e: float, seed: int = 0, size: int = 48) -> torch.Tensor:
    """An RGB image made of two stains (3×2 OD vectors): haematoxylin-rich nuclei on an
    eosin-rich background, with a strip of glass, concentrations scaled by ``h`` and ``e``."""
    rng = np.random.default_rng(seed)
    conc = np.zeros((2, size, size))
    conc[1] = e * rng.uniform(0.6, 1.0, (size, size))
    nuclei = rng.uniform(size=(size, size)) < 0.3
    conc[0][nuclei] = h * rng.uniform(0.4, 1.0, nuclei.sum())
    conc[1][nuclei] = e * rng.uniform(0.0, 0.05, nuclei.sum())  # nuclei take little eosin
    conc[:, :, :6] = 0.0  # glass
    od = np.einsum("cs,shw->chw", stains, conc)
    return torch.from_numpy((np.exp(-od) * 256.0 - 1.0) / 255.0).float().clamp(0, 1)


def test_macenko_recovers_the_stains_and_maps_them_to_the_target() -> None:
    from histocam.data.stain import (
        MACENKO_TARGET_MAX,
        MACENKO_TARGET_STAINS,
        macenko_normalize,
        macenko_stains,
    )

    # another lab's staining: stain vectors about 10 degrees off the target's, other strengths
    other = np.array([[0.75, 0.28], [0.60, 0.88], [0.28, 0.38]])
    other /= np.linalg.norm(other, axis=0)
    image = _stained(other, h=1.6, e=1.2)
    stains, maxima = macenko_stains(image)
    assert np.allclose(stains.numpy(), other, atol=0.03)  # the stains it was made of
    normalised = macenko_normalize(image)
    again, again_max = macenko_stains(normalised)
    assert np.allclose(again.numpy(), MACENKO_TARGET_STAINS, atol=0.03)
    assert np.allclose(again_max.numpy(), MACENKO_TARGET_MAX, rtol=0.05)
    assert torch.equal(normalised[:, :, :6], image[:, :, :6])  # glass stays glass


def test_macenko_leaves_the_target_and_glass_alone() -> None:
    from histocam.data.stain import MACENKO_TARGET_STAINS, macenko_normalize

    target = MACENKO_TARGET_STAINS / np.linalg.norm(MACENKO_TARGET_STAINS, axis=0)
    image = _stained(target, h=1.0, e=1.0, seed=1)
    # an image already in the target's stains only has its concentrations rescaled: the hue of
    # every pixel is kept (the OD vector keeps its direction)
    out = macenko_normalize(image)
    od_in = -torch.log((image * 255 + 1) / 256).reshape(3, -1)
    od_out = -torch.log((out * 255 + 1) / 256).reshape(3, -1)
    tissue = od_in.sum(0) > 0.3
    cos = torch.nn.functional.cosine_similarity(od_in[:, tissue], od_out[:, tissue], dim=0)
    assert float(cos.min()) > 0.99
    glass = torch.ones(3, 20, 20)
    assert torch.equal(macenko_normalize(glass), glass)


def test_stain_normalisation_applies_in_training_and_evaluation() -> None:
    from histocam.data.stain import macenko_normalize

    other = np.array([[0.75, 0.28], [0.60, 0.88], [0.28, 0.38]])
    image = (_stained(other / np.linalg.norm(other, axis=0), 1.6, 1.2, size=32) * 255).round()
    sample = Sample(image.permute(1, 2, 0).numpy().astype(np.uint8), 1, None, "x")
    as_float = torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255
    evaluated = JointTransform(False, 32, 32, 32, stain_normalize="macenko")(sample)["image"]
    assert torch.allclose(evaluated, macenko_normalize(as_float), atol=1e-6)
    # prediction (images and slide tiles) prepares its inputs the same way
    from histocam.data.transforms import model_input
    assert torch.allclose(model_input(sample.image, 32, "macenko"), evaluated, atol=1e-6)
    plain = JointTransform(False, 32, 32, 32)(sample)["image"]
    assert torch.allclose(model_input(sample.image, 32), plain, atol=1e-6)
    trained = JointTransform(True, 32, 32, 32, color_jitter=False,
                             stain_normalize="macenko")(sample, generator=torch.Generator())
    flips = [macenko_normalize(as_float).flip(d) for d in ((), (-1,), (-2,), (-1, -2))]
    assert any(torch.allclose(trained["image"], f, atol=1e-6) for f in flips)
