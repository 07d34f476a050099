"""Erasing/augmentation family (HaS, CutMix, ACoL, ADL, SPG): each method's own mechanism, checked
against hand-computed cases and slow loops; the registry-wide sweeps are in test_methods.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_run

from histocam.methods import create_method
from histocam.methods.acol import erase_region
from histocam.methods.adl import AttentionDropout, drop_mask
from histocam.methods.cutmix import cutmix_box, paste_box, soft_target_loss
from histocam.methods.has import hidden_patches
from histocam.methods.spg import IGNORE, guidance_targets, guided_bce
from histocam.train import RunConfig, Trainer

TINY = {"name": "test_resnet"}


def _method(name: str, num_classes: int = 3, **kw):
    torch.manual_seed(0)
    return create_method({"name": name, "backbone": TINY, **kw}, num_classes=num_classes)


def _cam_twin(method):
    """A CAM with the same weights: what the erasing methods must equal when nothing is erased."""
    cam = create_method({"name": "cam", "backbone": TINY}, num_classes=method.num_classes)
    cam.load_state_dict(method.state_dict())
    return cam.eval()


# --- HaS -------------------------------------------------------------------------------------

def test_has_grid_mask_equals_a_slow_loop_over_cells() -> None:
    b, h, w, s, p = 3, 13, 7, 4, 0.4  # 4×2 cells, the last row and column partial
    torch.manual_seed(5)
    cells = torch.rand(b, 1, math.ceil(h / s), math.ceil(w / s)) < p
    expected = torch.zeros(b, 1, h, w, dtype=torch.bool)
    for i in range(b):
        for r in range(cells.shape[2]):
            for c in range(cells.shape[3]):
                expected[i, 0, r * s : (r + 1) * s, c * s : (c + 1) * s] = cells[i, 0, r, c]
    torch.manual_seed(5)
    assert torch.equal(hidden_patches(b, h, w, s, p), expected)


def test_has_hides_the_requested_fraction_in_training_and_nothing_in_eval() -> None:
    m = _method("has", grid_size=8, drop_rate=0.3).train()
    images = torch.rand(64, 3, 61, 37)
    batch = {"image": images, "label": torch.zeros(64, dtype=torch.long)}
    torch.manual_seed(1)
    out = m.prepare_batch(batch)
    hidden = out["hidden"]
    assert abs(float(hidden.float().mean()) - 0.3) < 0.04
    # hidden pixels are the encoder's mean, i.e. exactly 0 after its normalisation; others unchanged
    normalised = (out["image"] - m.encoder.mean) / m.encoder.std
    assert float(normalised.permute(1, 0, 2, 3)[:, hidden].abs().max()) < 1e-6
    assert torch.equal(out["image"].permute(1, 0, 2, 3)[:, ~hidden],
                       images.permute(1, 0, 2, 3)[:, ~hidden])
    assert torch.equal(batch["image"], images)  # the caller's batch is not modified
    # whole grid cells: constant on every 8×8 cell (partial at the far edges)
    cells = F.max_pool2d(hidden[:, None].float(), 8, ceil_mode=True)
    assert torch.equal(cells.repeat_interleave(8, 2).repeat_interleave(8, 3)[:, 0, :61, :37],
                       hidden.float())
    # the extremes
    assert not _method("has", drop_rate=0.0).train().prepare_batch(batch)["hidden"].any()
    assert _method("has", drop_rate=1.0).train().prepare_batch(batch)["hidden"].all()
    # evaluation: the batch is untouched and the network is CAM's
    m.eval()
    assert m.prepare_batch(batch) is batch
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(m(x).logits, _cam_twin(m)(x).logits)


# --- CutMix ----------------------------------------------------------------------------------

def test_cutmix_box_and_labels_by_hand() -> None:
    # λ = 0.64: ratio √0.36 = 0.6, sides ⌊10·0.6⌋ = 6 and ⌊12·0.6⌋ = 7, half-sides 3 and 3;
    # centre (1, 10): rows 0..4 (clipped at the top), columns 7..12 (clipped at the right)
    box = cutmix_box(10, 12, 0.64, cy=1, cx=10)
    assert box == (0, 4, 7, 12)
    images = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 10, 12)  # image i is all i
    labels = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 0, 1])
    mixed, soft, lam = paste_box(images, labels, 3, box, perm)
    assert lam == pytest.approx(1 - 20 / 120)  # a 4×5 box pasted into 10×12
    for i in range(3):
        foreign = float((mixed[i, 0] != i).float().mean())
        assert foreign == pytest.approx(20 / 120)
        assert torch.all(mixed[i, :, 0:4, 7:12] == int(perm[i]))
        expected = torch.zeros(3)
        expected[labels[i]] += 5 / 6
        expected[labels[perm[i]]] += 1 / 6
        assert torch.allclose(soft[i], expected)


def test_cutmix_batch_labels_equal_the_pasted_area_fraction() -> None:
    m = _method("cutmix", num_classes=5).train()
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 23, 17).clone()
    labels = torch.arange(5)  # image i is all i and of class i
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = m.prepare_batch({"image": images, "label": labels})
        assert torch.allclose(out["soft_label"].sum(1), torch.ones(5))
        for i in range(5):
            own = float((out["image"][i] == i).float().mean())
            assert float(out["soft_label"][i, i]) == pytest.approx(own, abs=1e-6)
        seen.add(round(out["mix_lambda"], 4))
    assert len(seen) > 1  # λ is random
    # not mixed: probability 0, or evaluation
    plain = {"image": images, "label": labels}
    assert _method("cutmix", num_classes=5, cutmix_prob=0.0).train().prepare_batch(plain) is plain
    assert m.eval().prepare_batch(plain) is plain


def test_cutmix_loss_is_the_area_weighted_cross_entropy() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    lam = 0.7
    target = torch.tensor([[lam, 0.0, 1 - lam], [1 - lam, lam, 0.0]])
    ce = lambda z, y: F.cross_entropy(z[None], torch.tensor([y]))  # noqa: E731
    expected = (lam * ce(logits[0], 0) + (1 - lam) * ce(logits[0], 2)
                + lam * ce(logits[1], 1) + (1 - lam) * ce(logits[1], 0)) / 2
    assert float(soft_target_loss(logits, target, "ce")) == pytest.approx(float(expected), abs=1e-6)
    m = _method("cutmix")
    out = m(torch.rand(2, 3, 32, 32))
    loss, _ = m.loss({"label": torch.tensor([0, 1]), "soft_label": target}, out)
    assert float(loss.detach()) == pytest.approx(float(soft_target_loss(out.logits.detach(), target, "ce")))
    plain, _ = m.loss({"label": torch.tensor([0, 1])}, out)  # no mixing: the image loss
    assert float(plain.detach()) == pytest.approx(
        float(F.cross_entropy(out.logits.detach(), torch.tensor([0, 1]))))


# --- ACoL ------------------------------------------------------------------------------------

def _minmax(a: torch.Tensor) -> torch.Tensor:
    return (a - a.min()) / (a.max() - a.min())


def test_acol_second_branch_sees_zeros_where_the_first_map_is_above_delta() -> None:
    m = _method("acol", delta=0.5).eval()
    x = torch.rand(3, 3, 160, 224)
    labels = torch.tensor([2, 0, 1])
    seen = {}
    handle = m.head["b"].register_forward_hook(lambda mod, inputs, out: seen.update(b_in=inputs[0]))
    with torch.no_grad():
        out = m(x, erase_classes=labels)
    handle.remove()
    f = out.features[-1]
    for i in range(3):
        region = _minmax(out.extras["maps_a"][i, labels[i]])
        above = region > 0.5
        assert above.any() and (~above).any()
        assert float(seen["b_in"][i][:, above].abs().max()) == 0.0  # every channel erased
        assert torch.equal(seen["b_in"][i][:, ~above], f[i][:, ~above])  # the rest untouched
    # the fused map of class c is max(Ã_c, B̃_c), whatever the units the maps are stored in
    with torch.no_grad():
        _, low = m.localize_with_logits(x, labels, upsample=False)
    for i in range(3):
        expected = torch.maximum(_minmax(out.extras["maps_a"][i, labels[i]]),
                                 _minmax(out.extras["maps_b"][i, labels[i]]))
        assert torch.allclose(low[i], _minmax(expected), atol=1e-5)


def test_acol_erases_the_label_in_training_and_the_prediction_otherwise() -> None:
    m = _method("acol").train()
    x = torch.rand(4, 3, 96, 128)
    with torch.no_grad():
        predicted = m(x).logits.argmax(1)
    other = (predicted + 1) % 3  # labels that are not the prediction
    batch = {"image": x, "label": other}
    torch.manual_seed(0)
    loss, parts, out = m.training_step(batch)
    idx = torch.arange(4)
    assert torch.allclose(out.extras["region"],
                          torch.stack([_minmax(out.extras["maps_a"][i, other[i]]) for i in idx]),
                          atol=1e-6)
    assert not torch.allclose(out.extras["region"], torch.stack(
        [_minmax(out.extras["maps_a"][i, predicted[i]]) for i in idx]), atol=1e-3)
    ce_a = F.cross_entropy(out.logits.detach(), other)
    ce_b = F.cross_entropy(out.extras["logits_b"].detach(), other)
    assert float(loss.detach()) == pytest.approx(float(ce_a + ce_b), rel=1e-5)
    assert parts["ce_b"] == pytest.approx(float(ce_b), rel=1e-5)
    with torch.no_grad():
        plain = m.eval()(x)
    own = plain.logits.argmax(1)  # a plain forward erases its own prediction
    assert torch.allclose(plain.extras["region"],
                          torch.stack([_minmax(plain.extras["maps_a"][i, own[i]]) for i in idx]),
                          atol=1e-6)


def test_acol_erase_region_by_hand() -> None:
    f = torch.arange(1.0, 13.0).view(1, 2, 2, 3)
    region = torch.tensor([[[0.9, 0.5, 0.0], [0.51, 1.0, 0.2]]])
    erased = erase_region(f, region, 0.5)  # > 0.5 erased; 0.5 itself kept
    keep = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.equal(erased, f * keep)


# --- ADL -------------------------------------------------------------------------------------

def test_adl_layer_by_hand() -> None:
    f = torch.tensor([[[1.0, 4.0, 0.0], [2.0, 9.0, 3.0]],
                      [[3.0, 2.0, 0.0], [6.0, 7.0, 1.0]]]).unsqueeze(0)  # 1×2×2×3
    attention = f.mean(dim=1, keepdim=True)  # [[2, 3, 0], [4, 8, 2]], max 8
    assert torch.equal(attention[0, 0], torch.tensor([[2.0, 3.0, 0.0], [4.0, 8.0, 2.0]]))
    # γ = 0.5: drop where A > 4 -> only the 8; γ = 0.25: drop where A > 2 -> 3, 4, 8
    assert torch.equal(drop_mask(attention, 0.5)[0, 0], torch.tensor([[1.0, 1, 1], [1, 0, 1]]))
    assert torch.equal(drop_mask(attention, 0.25)[0, 0], torch.tensor([[1.0, 0, 1], [0, 0, 1]]))
    always_drop = AttentionDropout(drop_rate=1.0, gamma=0.25).train()
    assert torch.equal(always_drop(f), f * drop_mask(attention, 0.25))
    never_drop = AttentionDropout(drop_rate=0.0, gamma=0.25).train()
    assert torch.allclose(never_drop(f), f * torch.sigmoid(attention))
    # the per-image maximum: a second image with 10× the activations drops the same positions
    both = torch.cat([f, 10 * f])
    dropped = always_drop(both)
    assert torch.equal(dropped[1], 10 * dropped[0])
    # evaluation: the identity
    assert always_drop.eval()(f) is f


def test_adl_is_the_identity_in_eval_and_drops_only_above_gamma_max_in_training() -> None:
    m = _method("adl", drop_rate=1.0, gamma=0.8)
    x = torch.rand(3, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(m.eval()(x).logits, _cam_twin(m)(x).logits)
    # training: capture each hooked stage's output before its ADL layer (prepend) and after
    stages = m.encoder.stage_modules()
    before, handles = {}, []
    for i in m.config.stages:
        handles.append(stages[i].register_forward_hook(
            lambda mod, inp, out, i=i: before.__setitem__(i, out.detach().clone()), prepend=True))
    m.train()
    with torch.no_grad():
        out = m(x)
    for h in handles:
        h.remove()
    after = out.features[-1]  # the last stage is hooked by default
    raw = before[-1]
    attention = raw.mean(dim=1)
    for i in range(3):
        above = attention[i] > 0.8 * attention[i].max()
        assert above.any() and (~above).any()
        assert float(after[i][:, above].abs().max()) == 0.0
        assert torch.equal(after[i][:, ~above], raw[i][:, ~above])
    assert len(before) == 2  # both default stages were hooked


def test_adl_rejects_bad_stages_and_vit() -> None:
    with pytest.raises(ValueError, match="distinct index into the 5 stages"):
        _method("adl", stages=[7])
    with pytest.raises(ValueError, match="distinct index"):
        _method("adl", stages=[4, -1])
    with pytest.raises(ValueError, match="ADL needs a CNN backbone"):
        create_method({"name": "adl", "backbone": {"name": "test_vit"}}, num_classes=2)


# --- SPG -------------------------------------------------------------------------------------

def test_spg_targets_follow_the_thresholds_on_a_hand_made_map() -> None:
    p = torch.tensor([[[0.90, 0.60, 0.005], [0.30, 0.75, 0.02]],
                      [[0.40, 0.10, 0.000], [0.50, 0.05, 0.60]]])
    n = IGNORE
    # δ_h = 0.7, δ_l = 0.01, no fallback: > 0.7 -> 1, < 0.01 -> 0, the rest ignored
    expected = torch.tensor([[[1, n, 0], [n, 1, n]], [[n, n, 0], [n, n, n]]])
    assert torch.equal(guidance_targets(p, 0.7, 0.01), expected)
    # fallback: fewer than 2 pixels above δ_h -> FG threshold 0.5 · max, per image (image 1 only:
    # max 0.6 -> > 0.3: 0.4, 0.5, 0.6; image 0 has two pixels above 0.7 and keeps its threshold)
    expected_fallback = torch.tensor([[[1, n, 0], [n, 1, n]], [[1, n, 0], [1, n, 1]]])
    assert torch.equal(guidance_targets(p, 0.7, 0.01, min_pixels=2, ratio=0.5), expected_fallback)
    # BCE over the non-ignored pixels only
    logits = torch.randn(2, 2, 3, requires_grad=True)
    valid = expected != IGNORE
    ref = sum(F.binary_cross_entropy_with_logits(logits[valid][k], expected[valid][k].float())
              for k in range(int(valid.sum()))) / int(valid.sum())
    assert float(guided_bce(logits, expected).detach()) == pytest.approx(float(ref.detach()),
                                                                          abs=1e-6)
    none = guided_bce(logits, torch.full((2, 2, 3), IGNORE))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_spg_guidance_cascade_and_no_gradient_through_the_targets() -> None:
    m = _method("spg", fallback_min_pixels=0).train()
    x = torch.rand(2, 3, 64, 96)
    labels = torch.tensor([1, 2])
    out = m(x)
    targets = m.guidance(out, labels, (64, 96))
    # step 1: B2's targets threshold SPG-A's upsampled, normalised map of the label (δ1 = .7/.01)
    for i in range(2):
        a = out.maps[i, labels[i]].detach()
        up = _minmax(F.interpolate(a[None, None], size=(64, 96), mode="bilinear",
                                   align_corners=False)[0, 0])
        t = targets["b2"][i]
        assert torch.equal(t == 1, up > 0.7) and torch.equal(t == 0, up < 0.01)
    # step 2: B1's from σ(B2) with δ2 = .5/.05; step 3: C's from the mean of σ(B1), σ(B2), δ3
    up = lambda v: F.interpolate(v[:, None].detach(), size=(64, 96), mode="bilinear")[:, 0]  # noqa: E731
    p2, p1 = torch.sigmoid(up(out.extras["b2"])), torch.sigmoid(up(out.extras["b1"]))
    assert torch.equal(targets["b1"] == 1, p2 > 0.5) and torch.equal(targets["b1"] == 0, p2 < 0.05)
    fused = (p1 + p2) / 2
    assert torch.equal(targets["c"] == 1, fused > 0.7) and torch.equal(targets["c"] == 0, fused < 0.1)
    # the loss: CE + the three guided BCE terms; the guidance terms do not train SPG-A's classifier
    loss, parts = m.loss({"image": x, "label": labels}, out)
    assert float(loss.detach()) == pytest.approx(
        parts["ce"] + parts["spg_b2"] + parts["spg_b1"] + parts["spg_c"], rel=1e-5)
    guidance = loss - F.cross_entropy(out.logits, labels)
    grads = torch.autograd.grad(guidance, [m.head.classifier.weight, m.head.b_shared[0].weight],
                                allow_unused=True)
    assert grads[0] is None or float(grads[0].abs().max()) == 0.0
    assert float(grads[1].abs().max()) > 0.0


def test_spg_rejects_stages_that_are_not_below_the_last() -> None:
    with pytest.raises(ValueError, match="b1_stage=-1"):
        _method("spg", b1_stage=-1)
    with pytest.raises(ValueError, match="b2_stage=9"):
        _method("spg", b2_stage=9)
    with pytest.raises(ValueError, match="a ViT has 1"):
        create_method({"name": "spg", "backbone": {"name": "test_vit"}}, num_classes=2)


# --- training from a config --------------------------------------------------------------------

def test_cutmix_trains_one_epoch_through_the_trainer(tmp_path: Path) -> None:
    """The trainer's path through ``prepare_batch`` and the soft-label loss, from a config."""
    cfg = RunConfig.model_validate(tiny_run(
        tmp_path, name="cutmix", method={"name": "cutmix"}, data={"synthetic": {"n_valcl": 4}},
        train={"lr": 0.01}))
    Trainer(cfg).fit()
    rows = (cfg.run_dir.root / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "train_loss" in rows[0]  # header, epoch 0 (no training), epoch 1
    assert (cfg.run_dir.root / "checkpoints" / "last.pt").is_file()


def test_a_top_down_map_on_an_erasing_classifier_trains_the_classifier_its_way() -> None:
    """GradCAM on HaS hides patches, on ACoL erases the label's region: the composed method
    trains its classifier through the classifier's own hooks."""
    torch.manual_seed(0)
    has = create_method({"name": "gradcam", "backbone": {"name": "test_resnet"},
                         "classifier": {"name": "has", "drop_rate": 1.0}}, 2).train()
    x = torch.rand(2, 3, 32, 32)
    hidden = has.prepare_batch({"image": x.clone(), "label": torch.tensor([0, 1])})["image"]
    assert torch.allclose(hidden, has.encoder.mean.expand_as(x))  # every patch hidden
    acol = create_method({"name": "gradcam", "backbone": {"name": "test_resnet"},
                          "classifier": {"name": "acol"}}, 2).train()
    batch = {"image": x, "label": torch.tensor([0, 1])}
    torch.manual_seed(1)
    loss, parts, _ = acol.training_step(batch)
    torch.manual_seed(1)
    expected, _, _ = acol.classifier.training_step(batch)
    assert set(parts) == {"ce", "ce_b"} and torch.equal(loss, expected)
