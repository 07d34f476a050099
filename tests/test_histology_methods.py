"""NEGEV, Max-Min uncertainty and the U-Net bound: each loss against a hand-computed value, the
decoder's sizes, the frozen classifier, the barrier schedule, and NEGEV through the pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_pipeline

from histocam.methods import create_method
from histocam.methods.decoder import UNetDecoder
from histocam.methods.maxmin import log_barrier, pseudo_binarize, uncertainty_term
from histocam.methods.negev import negative_evidence_loss
from histocam.methods.sampling import IGNORE, one_hot_seeds
from histocam.methods.student import partial_cross_entropy
from histocam.methods.supervised import mask_cross_entropy

TINY = {"name": "test_resnet"}


def _ce(logits_bg: float, logits_fg: float, label: int) -> float:
    z = torch.tensor([float(logits_bg), float(logits_fg)])
    return float(-torch.log_softmax(z, 0)[label])


# ---------------------------------------------------------------- decoder and U-Net
@pytest.mark.parametrize("name", ["unet", "negev"])
def test_decoder_output_is_the_input_size_for_odd_sizes(name: str) -> None:
    m = create_method({"name": name, "backbone": TINY}, 2).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 3, 225, 199))
        maps = m.localize(torch.rand(1, 3, 37, 51), torch.tensor([1]))
    assert out.extras["pixel_logits"].shape == (2, 2, 225, 199)
    assert maps.shape == (1, 37, 51)


def test_decoder_uses_every_stage_and_the_last_widths_on_a_single_stage_encoder() -> None:
    deep = UNetDecoder([3, 5, 7])  # three stages: two skips + the last block
    assert [b[0].in_channels for b in deep.blocks] == [7 + 5, 64 + 3, 32]
    assert [b[0].out_channels for b in deep.blocks] == [64, 32, 16]
    vit = create_method({"name": "unet", "backbone": {"name": "test_vit"}}, 2).eval()
    assert len(vit.head["decoder"].blocks) == 1 and vit.head["decoder"].blocks[0][0].out_channels == 16
    with torch.no_grad():
        assert vit(torch.rand(1, 3, 32, 48)).extras["pixel_logits"].shape == (1, 2, 32, 48)
    with pytest.raises(ValueError, match="6 stages but the decoder only 5"):
        UNetDecoder([4] * 6)


def test_mask_cross_entropy_by_hand() -> None:
    logits = torch.zeros(3, 2, 2, 3)
    logits[0, 1, 0, 0] = 2.0  # image 0, pixel (0, 0): FG logit 2
    masks = torch.zeros(3, 2, 3)
    masks[0, 0, 0] = 1.0
    ignore = torch.zeros(3, 2, 3, dtype=torch.bool)
    ignore[0, 1, 2] = True
    batch = {"mask": masks, "has_mask": torch.tensor([True, False, True]), "ignore": ignore}
    # 11 counted pixels: image 0 (5, one ignored) + image 2 (6); image 1 has no mask
    expected = (_ce(0, 2, 1) + 4 * math.log(2) + 6 * math.log(2)) / 11
    assert float(mask_cross_entropy(logits, batch)) == pytest.approx(expected, rel=1e-6)
    none = {**batch, "has_mask": torch.tensor([False, False, False])}
    zero = mask_cross_entropy(logits.requires_grad_(), none)
    assert zero.requires_grad and float(zero.detach()) == 0.0  # a zero that backward accepts


def test_unet_frozen_encoder_is_not_optimised() -> None:
    m = create_method({"name": "unet", "backbone": TINY, "freeze_encoder": True}, 2).train()
    assert not m.encoder.training and [g["role"] for g in m.parameter_groups()] == ["head"]
    assert not any(p.requires_grad for p in m.encoder.parameters())


# ---------------------------------------------------------------- NEGEV
def test_negev_terms_by_hand() -> None:
    logits = torch.zeros(2, 2, 2, 2)
    logits[1, 1, 0, 0] = 3.0
    labels = torch.full((2, 2, 2), IGNORE)
    labels[1, 0, 0], labels[1, 1, 1] = 1, 0  # image 1: one FG and one BG seed
    # the partial CE counts only the two seeds of image 1, averaged over the two images
    expected = (_ce(0, 3, 1) + math.log(2)) / 2
    assert float(partial_cross_entropy(logits, one_hot_seeds(labels))) == pytest.approx(expected,
                                                                                        rel=1e-6)
    # the negative term: every pixel background, only for the negative image (image 1)
    negative = torch.tensor([False, True])
    per_pixel = [_ce(0, 3, 0)] + [math.log(2)] * 3
    assert float(negative_evidence_loss(logits, negative, "sum")) == pytest.approx(
        sum(per_pixel) / 2, rel=1e-6)
    assert float(negative_evidence_loss(logits, negative, "mean")) == pytest.approx(
        sum(per_pixel) / 4 / 2, rel=1e-6)
    assert float(negative_evidence_loss(logits, torch.tensor([False, False]))) == 0.0


def test_negev_loss_seeds_and_negative_images_are_exclusive() -> None:
    torch.manual_seed(0)
    m = create_method({"name": "negev", "backbone": TINY, "sampler": "static", "n": 1, "lam": 0.5},
                      2).eval()
    x = torch.rand(2, 3, 16, 16)
    cam = torch.zeros(2, 16, 16)
    cam[:, 3, 4], cam[:, 10, 2] = 1.0, 0.5  # static: top pixel FG, lowest (first zero) BG
    with torch.no_grad():
        out = m(x)
        loss, parts = m.loss({"label": torch.tensor([1, 0]), "cam": cam,
                              "negative": torch.tensor([False, True])}, out)
    z = out.extras["pixel_logits"]
    bg_pixel = int(cam[0].flatten().argsort(descending=True)[-1])
    seeds0, seeds1 = ((_ce(*z[i, :, 3, 4].tolist(), 1)
                       + _ce(*z[i, :, bg_pixel // 16, bg_pixel % 16].tolist(), 0)) for i in (0, 1))
    negative1 = float(F.cross_entropy(z[1:], torch.zeros(1, 16, 16, dtype=torch.long)))
    assert parts["pixel"] == pytest.approx(seeds0 / 2, rel=1e-5)
    assert parts["negative"] == pytest.approx(negative1 / 2, rel=1e-5)
    assert float(loss) == pytest.approx(0.5 * seeds0 / 2 + negative1 / 2, rel=1e-5)
    # ablation: without the negative term the negative image is seeded like any other
    m.config = m.config.model_copy(update={"negative_term": "none"})
    with torch.no_grad():
        _, parts = m.loss({"label": torch.tensor([1, 0]), "cam": cam,
                           "negative": torch.tensor([False, True])}, out)
    assert parts["negative"] == 0.0
    assert parts["pixel"] == pytest.approx((seeds0 + seeds1) / 2, rel=1e-5)


def test_negev_classifier_is_bit_identical_after_training() -> None:
    torch.manual_seed(0)
    m = create_method({"name": "negev", "backbone": TINY, "classifier": {"name": "deepmil"}}, 2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameter_groups(), lr=0.5, momentum=0.9)
    m.train()
    for _ in range(3):
        batch = {"image": torch.rand(4, 3, 32, 32), "label": torch.tensor([0, 1, 1, 0]),
                 "cam": torch.rand(4, 32, 32), "negative": torch.tensor([True, False, False, True])}
        loss, _, _ = m.training_step(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.state_dict()
    frozen = [k for k in before if not k.startswith("head.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # incl. BN buffers
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_negev_rejects_the_pixelcam_negative_rule() -> None:
    with pytest.raises(ValueError, match="negative_term"):
        create_method({"name": "negev", "negative_all_background": True}, 2)


# ---------------------------------------------------------------- Max-Min
def test_eem_and_sem_values_and_gradients_two_classes() -> None:
    a = 0.8
    logits = torch.tensor([[math.log(a), math.log(1 - a)]], requires_grad=True)
    eem = uncertainty_term(logits, "eem")
    assert float(eem.detach()) == pytest.approx(a * math.log(a) + (1 - a) * math.log(1 - a), rel=1e-6)
    (grad,) = torch.autograd.grad(eem, logits)
    # App. A eq. A.5: d(−H)/dp̂₁ = log(p̂₁/(1 − p̂₁)); dp̂₁/dz₁ = p̂₁(1 − p̂₁)
    assert float(grad[0, 0]) == pytest.approx(math.log(a / (1 - a)) * a * (1 - a), rel=1e-5)
    assert float(grad[0, 1]) == pytest.approx(-float(grad[0, 0]), rel=1e-5)
    sem = uncertainty_term(logits, "sem")
    assert float(sem.detach()) == pytest.approx(-0.5 * (math.log(a) + math.log(1 - a)), rel=1e-6)
    (grad,) = torch.autograd.grad(sem, logits)
    # eq. A.7: −½ (1/p̂₁ − 1/(1 − p̂₁)) · p̂₁(1 − p̂₁) = p̂₁ − ½
    assert float(grad[0, 0]) == pytest.approx(a - 0.5, rel=1e-5)
    uniform = torch.zeros(3, 2)
    assert float(uncertainty_term(uniform, "eem")) == pytest.approx(-math.log(2))  # its minimum


def test_eq12_and_the_barrier_by_hand() -> None:
    sigma, omega = 0.15, 5.0
    maps = torch.tensor([sigma, sigma + math.log(3) / omega])
    assert pseudo_binarize(maps, sigma, omega).tolist() == pytest.approx([0.5, 0.75])
    mask = torch.tensor([[[1.0, 0.5], [0.25, 0.0]], [[0.5, 0.5], [0.5, 0.5]]])
    # image 0: s⁺ = 1.75, s⁻ = 2.25; image 1: s⁺ = s⁻ = 2
    expected = -((math.log(1.75) + math.log(2.25)) + 2 * math.log(2)) / 2 / 5.0
    assert float(log_barrier(mask, 5.0)) == pytest.approx(expected, rel=1e-6)


def test_barrier_t_schedule_and_checkpoint() -> None:
    m = create_method({"name": "maxmin", "backbone": TINY}, 2)
    m.on_epoch_end(1)
    assert float(m.barrier_t) == pytest.approx(5.05)
    for epoch in range(2, 70):
        m.on_epoch_end(epoch)
    assert float(m.barrier_t) == pytest.approx(5 * 1.01 ** 69, rel=1e-5)  # 9.93: not capped yet
    m.on_epoch_end(70)
    assert float(m.barrier_t) == 10.0  # 5 · 1.01^70 = 10.03, capped
    fresh = create_method({"name": "maxmin", "backbone": TINY}, 2)
    fresh.load_state_dict(m.state_dict())  # resume keeps the schedule
    assert float(fresh.barrier_t) == 10.0


def test_maxmin_loss_has_every_term_with_its_weight() -> None:
    """No term is multiplied by zero (the known bug of the authors' port): switching each one on
    adds exactly its value, computed independently."""
    torch.manual_seed(0)
    m = create_method({"name": "maxmin", "backbone": TINY, "dropout": 0.0, "lam": 1.0}, 3).eval()
    x, y = torch.rand(2, 3, 40, 24), torch.tensor([2, 0])
    with torch.no_grad():
        out = m(x)
        full, parts = m.loss({"image": x, "label": y}, out)
        mask = out.extras["foreground"]
        hidden = m.encoder.mean + (x - m.encoder.mean) * (1 - mask)[:, None]
        logits_bg, _ = m._wildcat("classifier", m.encoder(hidden))
        m.config = m.config.model_copy(update={"lam": 0.0, "size_term": False})
        bare, _ = m.loss({"image": x, "label": y}, out)
    r = uncertainty_term(logits_bg, "eem")
    barrier = log_barrier(mask, 5.0)
    assert float(full - bare) == pytest.approx(float(r + barrier), rel=1e-5, abs=1e-6)
    ce = F.cross_entropy(out.logits, y) + F.cross_entropy(out.extras["localizer_logits"], y)
    assert float(bare) == pytest.approx(float(ce), rel=1e-6)
    assert parts["uncertainty_bg"] == pytest.approx(float(r), rel=1e-5)


def test_maxmin_hides_pixels_as_the_weights_mean_and_maps_m_plus() -> None:
    m = create_method({"name": "maxmin", "backbone": TINY, "map_normalization": "none"}, 2).eval()
    x = torch.rand(2, 3, 32, 32)
    hidden = m._masked(x, torch.zeros(2, 32, 32))
    assert torch.allclose((hidden - m.encoder.mean) / m.encoder.std, torch.zeros_like(x))
    assert torch.allclose(m._masked(x, torch.ones(2, 32, 32)), x, atol=1e-6)
    with torch.no_grad():
        logits, maps = m.localize_with_logits(x, torch.tensor([0, 1]))
        out = m(x)
    assert torch.equal(maps, out.extras["foreground"]) and torch.equal(logits, out.logits)
    # M⁺ = sigmoid(ω(M − σ)) of a map in [0, 1]: between sigmoid(−ωσ) and sigmoid(ω(1 − σ))
    assert float(maps.min()) >= torch.sigmoid(torch.tensor(-0.75)) - 1e-6
    assert float(maps.max()) <= torch.sigmoid(torch.tensor(4.25)) + 1e-6


def test_maxmin_map_is_the_protocols_minmax_of_m_plus() -> None:
    torch.manual_seed(0)
    m = create_method({"name": "maxmin", "backbone": TINY}, 2).eval()
    x = torch.rand(3, 3, 40, 56)
    with torch.no_grad():
        _, low = m.localize_with_logits(x, torch.tensor([0, 1, 1]), upsample=False)
        maps = m.localize(x, torch.tensor([0, 1, 1]))
        m_plus = m.head_forward(m.encoder(x)).extras["mask"]
    flat = m_plus.flatten(1)
    expected = (m_plus - flat.amin(1)[:, None, None]) / (flat.amax(1) - flat.amin(1))[:, None, None]
    assert torch.allclose(low, expected, atol=1e-6)
    assert maps.shape == (3, 40, 56) and float(maps.min()) == 0.0 and float(maps.max()) == 1.0


def test_maxmin_cannot_be_the_classifier_of_a_composed_method() -> None:
    with pytest.raises(ValueError, match="cannot be the classifier"):
        create_method({"name": "pixelcam", "classifier": {"name": "maxmin"}}, 2)


def test_negev_needs_full_resolution_logits() -> None:
    with pytest.raises(ValueError, match="loss_resolution"):
        create_method({"name": "negev", "loss_resolution": "low"}, 2)


def test_maxmin_needs_softmax_posteriors() -> None:
    with pytest.raises(ValueError, match="image_loss: ce"):
        create_method({"name": "maxmin", "image_loss": "bce"}, 2)


# ---------------------------------------------------------------- NEGEV through the pipeline
@pytest.mark.slow
def test_negev_pipeline_keeps_the_teacher_classifier_and_selects_on_localization(
        tmp_path: Path) -> None:
    from histocam.core.atomic import load_checkpoint
    from histocam.experiments.pipeline import PipelineConfig, run_pipeline

    tiny = {"epochs": 2, "batch_size": 4, "num_workers": 0}
    p = PipelineConfig.model_validate(tiny_pipeline(
        tmp_path, teacher={"method": {"name": "cam"}, "train": tiny},
        student={"method": {"name": "negev"}, "train": tiny}, data={"dataset": "synthetic-node"}))
    results = run_pipeline(p, progress=False)
    assert results.student_method == "negev"
    assert "cam + NEGEV" in (p.root / "comparison.md").read_text()
    teacher = load_checkpoint(p.root / "teacher-cam" / "checkpoints" / "best-cl.pt")["model"]
    student_dir = p.root / "negev-cam"
    for ckpt in ("best-loc", "best-cl", "last"):
        state = load_checkpoint(student_dir / "checkpoints" / f"{ckpt}.pt")["model"]
        assert all(torch.equal(state[f"classifier.{k}"], v) for k, v in teacher.items())
    # B-CL carries no information with a frozen classifier: it is the B-LOC checkpoint
    best_loc = load_checkpoint(student_dir / "checkpoints" / "best-loc.pt")
    best_cl = load_checkpoint(student_dir / "checkpoints" / "best-cl.pt")
    assert best_loc["epoch"] == best_cl["epoch"]
    saved = json.loads((p.root / "comparison.json").read_text())
    assert saved["student"]["best-loc"]["pxap"] == saved["student"]["best-cl"]["pxap"]
