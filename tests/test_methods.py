"""Pooling-family methods: hand-checked pooling, CAM rows, batch == per-sample, training steps."""

from __future__ import annotations

import math

import pytest
import torch

from histocam.maps.normalize import minmax_normalize, normalize_cam
from histocam.methods import METHODS, create_method
from histocam.methods.lse import lse_pool
from histocam.methods.prm import peak_pool
from histocam.methods.wildcat import wildcat_pool

TINY = {"name": "test_resnet"}
TINY_VIT = {"name": "test_vit"}  # the transformer family needs a ViT (its tokens and attention)


FAST = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2},
        "smoothgradcampp": {"num_samples": 2},
        # PyTorch's init: a zero-initialised pixel head maps every pixel to ½, which passes any
        # range check without testing the map
        "pixelcam": {"head_init": "default"}}
NOISY = {"sscam", "smoothgradcampp"}  # random noise per call: batch != per-sample by design


def _method(name: str, **kw):
    torch.manual_seed(0)
    kw = {**FAST.get(name, {}), **kw}
    backbone = TINY_VIT if METHODS.info(name)["family"] == "transformer" else TINY
    return create_method({"name": name, "backbone": backbone, **kw}, num_classes=3).eval()


def test_cam_equals_weighted_feature_sum_of_gt_row() -> None:
    m = _method("cam")
    x = torch.randn(3, 3, 56, 88)
    out = m(x)
    f = out.features[-1]
    classes = torch.tensor([2, 0, 1])
    low = m.class_maps(out, classes)
    for b in range(3):
        c = int(classes[b])
        expected = sum(m.head.weight[c, k] * f[b, k] for k in range(f.shape[1]))
        assert torch.allclose(low[b], expected, atol=1e-5)
    # the head has exactly K rows: no background row to be off by one with
    assert m.head.weight.shape[0] == 3
    # logits = W · GAP(F) + b, so GAP of the class map + bias = logit
    assert torch.allclose(out.maps.mean(dim=(2, 3)) + m.head.bias, out.logits, atol=1e-5)


def test_lse_limits() -> None:
    maps = torch.randn(3, 5, 7, 11, dtype=torch.float64)  # float64: q -> 0 is ill-conditioned
    flat = maps.flatten(2)
    assert torch.allclose(lse_pool(maps, 1e4), flat.amax(2), atol=1e-3)
    assert torch.allclose(lse_pool(maps, 1e-5), flat.mean(2), atol=1e-4)
    q = 2.0
    ref = torch.log(torch.exp(q * flat).mean(2)) / q
    assert torch.allclose(lse_pool(maps, q), ref, atol=1e-5)


def test_wildcat_kmax_kmin_selection_by_hand() -> None:
    values = torch.tensor([5.0, -1.0, 3.0, 0.0, 2.0, -4.0, 1.0, 4.0, -2.0, -3.0]).view(1, 1, 2, 5)
    # kmax 0.3 of 10 = 3 -> {5, 4, 3}; kmin 0.2 = 2 -> {-4, -3}; alpha 0.5
    assert wildcat_pool(values, 0.3, 0.2, 0.5).item() == pytest.approx(4.0 + 0.5 * (-3.5))
    # integer counts, and no negative evidence
    assert wildcat_pool(values, 2, 0, 0.7).item() == pytest.approx(4.5)


def test_deepmil_attention_sums_to_one_and_is_the_map() -> None:
    m = _method("deepmil")
    out = m(torch.randn(3, 3, 56, 88))
    sums = out.maps.flatten(2).sum(2)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert (out.maps >= 0).all()
    ungated = _method("deepmil", gated=False)
    assert ungated.head.u is None


def test_prm_peak_pool_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 6.0, 0.0, 0.0]]).view(1, 1, 3, 5)
    # 3×3 local maxima: 1 (top-left), 2 (top-right), 6 (centre); zeros next to them are not peaks
    # but isolated zeros whose whole window is zero are (value 0 >= max 0): count them too
    peaks = [(0, 0), (0, 4), (2, 2)]
    window_max = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, stride=1)
    is_peak = (x >= window_max)
    assert all(bool(is_peak[0, 0, i, j]) for i, j in peaks)
    expected = float((x * is_peak).sum() / is_peak.sum())
    assert peak_pool(x, 3).item() == pytest.approx(expected)


def test_normalisation_constant_map_is_zero_and_minmax() -> None:
    cams = torch.stack([torch.full((7, 11), 3.0), torch.arange(77.0).view(7, 11) - 10])
    out = minmax_normalize(cams, relu=False)
    assert torch.equal(out[0], torch.zeros(7, 11))
    assert out[1].min() == 0 and out[1].max() == 1
    relu = minmax_normalize(cams, relu=True)
    assert torch.equal(relu[1][cams[1] <= 0], torch.zeros(int((cams[1] <= 0).sum())))
    up = normalize_cam(cams, (14, 22), relu=False)
    assert up.shape == (2, 14, 22) and torch.isfinite(up).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_normalisation_rejects_non_finite_maps(bad: float) -> None:
    cams = torch.rand(3, 5, 7)
    cams[2, 4, 6] = bad  # the last pixel: a min or max over a NaN map would not reach it
    for relu in (False, True):  # ReLU would turn -inf into 0: the check comes first
        with pytest.raises(ValueError, match="map #2 of the batch is not finite"):
            minmax_normalize(cams, relu=relu)


def _raw_maps(m, x, classes):
    """Built-in class maps before normalisation, else the method's low-resolution map."""
    out = m(x)
    if out.maps is not None:
        return m.class_maps(out, classes)
    return m.localize_with_logits(x, classes, upsample=False)[1]


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in NOISY])
def test_localize_batch_equals_per_sample_and_protocol_checks(name: str) -> None:
    m = _method(name)
    x = torch.randn(3, 3, 56, 88)
    classes = torch.tensor([1, 2, 0])
    with torch.no_grad():
        batch = m.localize(x, classes)
        assert batch.shape == (3, 56, 88)
        assert torch.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 1
        single = torch.cat([m.localize(x[i : i + 1], classes[i : i + 1]) for i in range(3)])
        raw = _raw_maps(m, x, classes)
        raw_single = torch.cat([_raw_maps(m, x[i : i + 1], classes[i : i + 1]) for i in range(3)])
        built_in = m(x).maps is not None
    # built-in maps before normalisation are exact; a top-down map is already min–max normalised
    assert torch.allclose(raw, raw_single, rtol=1e-5, atol=1e-6 if built_in else 1e-4)
    # min–max divides by the map's range, which amplifies float32 noise of flat maps
    assert torch.allclose(batch, single, atol=1e-4)


@pytest.mark.parametrize("name", METHODS.names())
def test_maps_are_valid_for_every_method(name: str) -> None:
    m = _method(name)
    maps = m.localize(torch.randn(3, 3, 56, 88), torch.tensor([1, 2, 0]))
    assert maps.shape == (3, 56, 88)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert bool((maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).any())  # not constant


@pytest.mark.parametrize("name", METHODS.names())
def test_each_method_trains_a_few_steps(name: str) -> None:
    m = _method(name).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    x = torch.randn(5, 3, 48, 80)
    y = torch.tensor([0, 1, 2, 1, 0])
    losses = []
    for _ in range(4):  # the trainer's calls: prepare_batch, then training_step
        batch = m.prepare_batch({"image": x, "label": y,
                                 "mask": (torch.rand(5, 48, 80) > 0.5).float(),
                                 "has_mask": torch.tensor([True, True, False, True, True]),
                                 "cam": torch.rand(5, 48, 80)})
        loss, parts, out = m.training_step(batch)
        assert out.logits.shape == (5, 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        assert math.isfinite(losses[-1]) and parts
    assert losses[-1] < losses[0]


def test_vit_tokens_become_the_patch_grid() -> None:
    m = create_method({"name": "cam", "backbone": {"name": "test_vit"}}, num_classes=2).eval()
    out = m(torch.randn(2, 3, 64, 64))
    assert out.features[-1].shape[-2:] == (4, 4)  # 64 / patch 16, class token dropped
    assert m.localize(torch.randn(2, 3, 64, 64), torch.tensor([0, 1])).shape == (2, 64, 64)


def test_unknown_method_and_unknown_hyperparameter() -> None:
    with pytest.raises(KeyError, match="did you mean 'lse'"):
        create_method({"name": "lsee"}, 2)
    with pytest.raises(ValueError, match="extra"):
        create_method({"name": "lse", "qq": 3}, 2)


@pytest.mark.parametrize("name", ["gradcampp", "layercam", "scorecam", "ablationcam"])
def test_top_down_maps_are_the_same_under_no_grad(name: str) -> None:
    """Evaluation loops run under torch.no_grad(); top-down CAMs must re-enable what they need."""
    m = _method(name)
    x = torch.randn(2, 3, 48, 64)
    classes = torch.tensor([2, 0])
    expected = m.localize(x, classes)
    with torch.no_grad():
        assert torch.allclose(m.localize(x, classes), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["gradcam", "xgradcam"])
def test_gradcam_method_equals_cam_on_a_gap_linear_head(name: str) -> None:
    """For GAP + linear, Grad-CAM's and XGrad-CAM's channel weights are the classifier row times a
    positive factor, so after ReLU and min–max their maps are CAM's: checks the top-down path of
    the registered methods (encoder without a graph, head from a leaf copy of the last stage)."""
    cam = _method("cam")
    top_down = _method(name)
    top_down.load_initial_state(cam.state_dict())  # the classifier's weights: a CAM run's
    x = torch.randn(3, 3, 56, 88)
    classes = torch.tensor([2, 0, 1])
    logits, maps = top_down.localize_with_logits(x, classes)
    assert torch.allclose(maps, cam.localize(x, classes), atol=1e-5)
    assert torch.allclose(logits, cam(x).logits, atol=1e-5)


def test_image_loss_hand_cases() -> None:
    from histocam.methods.base import image_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([0, 2])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731  BCE(z, 1) = softplus(-z)
    expected_bce = (softplus(-2.0) + softplus(-1.0) + softplus(0.5)
                    + softplus(0.0) + softplus(3.0) + softplus(2.0)) / 6
    assert float(image_loss(logits, labels, "bce")) == pytest.approx(expected_bce, abs=1e-6)
    lse = [math.log(sum(math.exp(v) for v in row)) for row in logits.tolist()]
    expected_ce = ((lse[0] - 2.0) + (lse[1] + 2.0)) / 2
    assert float(image_loss(logits, labels, "ce")) == pytest.approx(expected_ce, abs=1e-6)
    with pytest.raises(ValueError, match="unknown image loss 'hinge'"):
        image_loss(logits, labels, "hinge")


def test_bce_trains_each_class_map_against_the_other_classes() -> None:
    # with BCE the gradient of class c's logit is sigmoid(z_c) - [y == c], independently per class;
    # softmax CE couples them (they sum to zero over classes)
    m = create_method({"name": "wildcat", "backbone": TINY, "image_loss": "bce", "kmin": 0.0},
                      num_classes=3)
    x, y = torch.rand(5, 3, 32, 32), torch.tensor([0, 1, 2, 1, 0])
    out = m(x)
    out.logits.retain_grad()
    loss, parts = m.loss({"label": y}, out)
    loss.backward()
    expected = (torch.sigmoid(out.logits) - torch.nn.functional.one_hot(y, 3)) / out.logits.numel()
    torch.testing.assert_close(out.logits.grad, expected.detach(), atol=1e-6, rtol=1e-5)
    assert parts["ce"] == pytest.approx(float(loss.detach()))
