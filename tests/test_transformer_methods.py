"""The transformer family (TS-CAM, SAT) on DeiT-Tiny from scratch, at small odd-sized inputs:
maps against slow explicit loops over blocks, heads and tokens; SAT's spatial-query attention and
losses against hand-computed cases; batch == per-sample; clear errors."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from histocam.methods import create_method
from histocam.methods.sat import (
    batch_area_loss,
    normalization_loss,
    smoothing_kernel,
    spatial_query_attention,
)
from histocam.models.backbones import create_encoder

DEIT = "deit_tiny_patch16_224"
DEIT_DISTILLED = "deit_tiny_distilled_patch16_224"  # two prefix tokens: class and distillation



@functools.cache
def _encoder(backbone: str):
    """One DeiT-Tiny from scratch per module, shared by the methods (the tests only read it)."""
    torch.manual_seed(0)
    return create_encoder(backbone).eval()


@functools.cache
def _method(name: str, backbone: str = DEIT):
    torch.manual_seed(1)
    encoder = _encoder(backbone)  # SAT hooks its spatial token into its encoder: its own copy
    encoder = copy.deepcopy(encoder) if name == "sat" else encoder
    return create_method({"name": name, "backbone": {"name": backbone}}, num_classes=3,
                         encoder=encoder).eval()


def _input(vit, x):
    """Tokens entering the first block, through timm's own embedding."""
    return vit._pos_embed(vit.patch_embed(x))


def _slow_conv(grid: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """D×h×w -> K×h×w, one output value at a time (zero padding)."""
    _, h, w = grid.shape
    k = conv.kernel_size[0]
    r = k // 2
    padded = F.pad(grid, (r, r, r, r))
    out = torch.empty(conv.out_channels, h, w)
    for c in range(conv.out_channels):
        for y in range(h):
            for x in range(w):
                out[c, y, x] = (padded[:, y : y + k, x : x + k] * conv.weight[c]).sum() + conv.bias[c]
    return out


def _head_split(block, t):
    """Per-head q, k, v (heads × N × d) of one image's tokens t (N×D) from the block's weights."""
    a = block.attn
    qkv = block.norm1(t) @ a.qkv.weight.T + a.qkv.bias
    n, heads = t.shape[0], a.num_heads
    q, k, v = qkv.view(n, 3, heads, -1).permute(1, 2, 0, 3)
    return q, k, v, a.scale


def _row_softmax(values: list[float]) -> list[float]:
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("backbone", [DEIT, DEIT_DISTILLED])
def test_tscam_map_is_class_token_attention_times_token_maps_by_slow_loops(backbone: str) -> None:
    m = _method("tscam", backbone)
    x = torch.rand(2, 3, 48, 80)  # a 3×5 patch grid
    with torch.no_grad():
        out = m(x)
        vit = m.encoder.model
        xn = (x - m.encoder.mean) / m.encoder.std
        prefix, (h, w) = vit.num_prefix_tokens, (3, 5)
        final = vit.forward_features(xn)  # timm's own pass: the tokens TS-CAM classifies
        for b in range(2):
            t = _input(vit, xn[b : b + 1])[0]
            attention = torch.zeros(h * w)  # class token -> patch tokens, summed over blocks, heads
            for block in vit.blocks:
                q, k, _, scale = _head_split(block, t)
                for head in range(q.shape[0]):
                    row = _row_softmax([float(q[head, 0] @ k[head, j]) * scale
                                        for j in range(t.shape[0])])
                    for j in range(h * w):
                        attention[j] += row[prefix + j]
                t = block(t[None])[0]
            attention /= len(vit.blocks) * vit.blocks[0].attn.num_heads
            grid = final[b, prefix:].T.reshape(-1, h, w)
            semantic = _slow_conv(grid, m.head)
            assert torch.allclose(out.logits[b], semantic.mean(dim=(1, 2)), atol=1e-4)
            for c in range(3):
                for y in range(h):
                    for xx in range(w):
                        expected = attention[y * w + xx] * semantic[c, y, xx]
                        assert math.isclose(float(out.maps[b, c, y, xx]), float(expected),
                                            rel_tol=1e-3, abs_tol=1e-5)
    # the coupled map is per class: the maps of two classes differ
    assert not torch.allclose(out.maps[:, 0], out.maps[:, 1])


def test_spatial_query_attention_by_hand() -> None:
    """Two heads, three tokens (the spatial token last). The spatial token's logits averaged over
    the heads are [0, ln 3, −ln 3], so m = σ(·) = [1/2, 3/4, 1/4]; every attention column j is
    multiplied by m_j, rows are not renormalised."""
    a = math.log(3.0)
    logits = torch.zeros(1, 2, 3, 3)
    logits[0, 0, 2] = torch.tensor([0.0, 2 * a, -2 * a])  # head 1's spatial row; head 2's is 0
    attention = logits.softmax(dim=-1)
    reweighted, mask = spatial_query_attention(logits, attention)
    assert torch.allclose(mask, torch.tensor([[0.5, 0.75, 0.25]]))
    # rows with zero logits: softmax 1/3 each -> [1/6, 1/4, 1/12]
    assert torch.allclose(reweighted[0, 1, 0], torch.tensor([1 / 6, 1 / 4, 1 / 12]))
    assert torch.allclose(reweighted[0, 0, 1], torch.tensor([1 / 6, 1 / 4, 1 / 12]))
    # head 1's spatial row: softmax([0, 2 ln 3, −2 ln 3]) = [9, 81, 1] / 91, times m
    expected = torch.tensor([9 / 91 * 0.5, 81 / 91 * 0.75, 1 / 91 * 0.25])
    assert torch.allclose(reweighted[0, 0, 2], expected)


def _slow_sat(m, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """SAT's pass for one image, head by head and token by token: (map h×w, logits K)."""
    vit = m.encoder.model
    prefix, (h, w) = vit.num_prefix_tokens, grid
    t = torch.cat([_input(vit, (x[None] - m.encoder.mean) / m.encoder.std)[0],
                   m.head.spatial_token[0]])
    n = t.shape[0]
    first = len(vit.blocks) - m.config.spatial_blocks
    maps = []
    for index, block in enumerate(vit.blocks):
        q, k, v, scale = _head_split(block, t)
        heads = q.shape[0]
        logits = [[[float(q[hd, i] @ k[hd, j]) * scale for j in range(n)] for i in range(n)]
                  for hd in range(heads)]
        fg = [1 / (1 + math.exp(-sum(logits[hd][n - 1][j] for hd in range(heads)) / heads))
              for j in range(n)]
        mixed = torch.zeros(n, heads, v.shape[-1])
        for hd in range(heads):
            for i in range(n):
                row = _row_softmax(logits[hd][i])
                for j in range(n):
                    weight = row[j] * (fg[j] if index >= first else 1.0)
                    mixed[i, hd] += weight * v[hd, j]
        t = t + block.attn.proj(mixed.reshape(n, -1))
        t = t + block.mlp(block.norm2(t))
        if index >= first:
            maps.append(torch.tensor(fg[prefix : prefix + h * w]))
    spatial = torch.stack(maps).mean(dim=0).view(h, w)
    patches = vit.norm(t)[prefix : prefix + h * w].T.reshape(-1, h, w)
    return spatial, _slow_conv(patches, m.head.conv).mean(dim=(1, 2))


def test_sat_map_and_logits_equal_a_slow_token_by_token_pass() -> None:
    m = _method("sat")
    x = torch.rand(2, 3, 32, 48)  # a 2×3 patch grid: 1 class + 6 patch + 1 spatial token
    with torch.no_grad():
        out = m(x)
        for b in range(2):
            spatial, logits = _slow_sat(m, x[b], (2, 3))
            assert torch.allclose(out.extras["spatial_map"][b], spatial, atol=1e-5)
            assert torch.allclose(out.logits[b], logits, atol=1e-4)
    # class-agnostic: every class has the spatial token's map
    assert torch.equal(out.maps[:, 0], out.maps[:, 2])
    assert torch.equal(out.maps[:, 1], out.extras["spatial_map"])


def test_sat_smoothing_kernel_and_losses_by_hand() -> None:
    # 1-D masses: the normal's mass in 3 bins over ±(6 + 13/6), edges ±(6 + 13/6) and ±(13/6 − 6 +
    # 13/3) = ±49/18
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    outer, inner = 6 + 13 / 6, 49 / 18
    g = [phi(-inner) - phi(-outer), phi(inner) - phi(-inner), phi(outer) - phi(inner)]
    raw = [[math.sqrt(a * b) for b in g] for a in g]
    total = sum(map(sum, raw))
    kernel = smoothing_kernel(3, 6.0)
    assert torch.allclose(kernel, torch.tensor(raw) / total, atol=1e-7)
    assert kernel[1, 1] > 0.8 and float(kernel.sum()) == pytest.approx(1.0)

    maps = torch.stack([torch.full((2, 3), 0.5), torch.full((2, 3), 0.1)])
    # batch means 0.5 and 0.1: the batch's 0.3 against r = 0.25 (not each image's |· − r|)
    assert float(batch_area_loss(maps, 0.25)) == pytest.approx(0.05, abs=1e-6)
    # a 1×1 kernel smooths nothing: mean of m(1 − m) = (0.25 + 0.09) / 2
    assert float(normalization_loss(maps, torch.ones(1, 1))) == pytest.approx(0.17, abs=1e-6)
    # the 3×3 kernel with zero padding, one pixel at a time
    ones = torch.ones(1, 3, 4)
    expected = 0.0
    for y in range(3):
        for x in range(4):
            s = sum(raw[dy + 1][dx + 1] / total for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                    if 0 <= y + dy < 3 and 0 <= x + dx < 4)
            expected += s * (1 - s) / 12
    assert float(normalization_loss(ones, kernel)) == pytest.approx(expected, abs=1e-6)
    assert expected > 0  # the border pixels lose part of their kernel


def test_sat_loss_is_ce_plus_weighted_area_and_normalisation() -> None:
    m = create_method({"name": "sat", "backbone": {"name": "test_vit"}, "area_weight": 2.0,
                       "norm_weight": 0.5, "area_target": 0.4}, num_classes=3).train()
    out = m(torch.rand(3, 3, 32, 48))
    loss, parts = m.loss({"label": torch.tensor([0, 2, 1])}, out)
    area = abs(float(out.extras["spatial_map"].detach().mean()) - 0.4)
    assert parts["area"] == pytest.approx(area, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(parts["ce"] + 2 * parts["area"] + 0.5 * parts["norm"],
                                        abs=1e-5)
    loss.backward()
    assert m.head.spatial_token.grad is not None and m.head.spatial_token.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["tscam", "sat"])
def test_batch_equals_per_sample_with_two_prefix_tokens(name: str) -> None:
    m = _method(name, DEIT_DISTILLED)
    x = torch.rand(3, 3, 40, 72)  # padded to a 3×5 grid
    classes = torch.tensor([2, 0, 1])
    with torch.no_grad():
        batch = m(x)
        single = [m(x[i : i + 1]) for i in range(3)]
        maps = m.localize(x, classes)
        maps_single = torch.cat([m.localize(x[i : i + 1], classes[i : i + 1]) for i in range(3)])
    assert batch.maps.shape == (3, 3, 3, 5) and maps.shape == (3, 40, 72)
    assert torch.allclose(batch.logits, torch.cat([s.logits for s in single]), atol=1e-5)
    assert torch.allclose(batch.maps, torch.cat([s.maps for s in single]), atol=1e-6)
    assert torch.allclose(maps, maps_single, atol=1e-4)
    assert maps.min() >= 0 and maps.max() <= 1


def test_vit_encoder_takes_any_input_size() -> None:
    encoder = _method("tscam", DEIT_DISTILLED).encoder
    x = torch.rand(2, 3, 40, 72)
    with torch.no_grad():
        tokens, attention = encoder.vit_blocks(x)
        reference = encoder.model.forward_features((x - encoder.mean) / encoder.std)
        grid = encoder(x)[-1]
    assert encoder.vit_grid(x) == (3, 5) and grid.shape == (2, 192, 3, 5)
    assert torch.allclose(tokens[-1], reference, atol=1e-5)
    assert attention[0].shape == (2, 3, 17, 17)
    assert torch.allclose(attention[-1].sum(-1), torch.ones(()), atol=1e-5)


def test_transformer_methods_reject_what_they_cannot_use() -> None:
    for name in ("tscam", "sat"):
        with pytest.raises(ValueError, match=f"method '{name}' needs a ViT backbone"):
            create_method({"name": name, "backbone": {"name": "test_resnet"}}, num_classes=2)
    with pytest.raises(ValueError, match="spatial_blocks=7 but the backbone test_vit has 6 blocks"):
        create_method({"name": "sat", "backbone": {"name": "test_vit"}, "spatial_blocks": 7}, 2)
    with pytest.raises(ValidationError, match="smoothing_size must be odd"):
        create_method({"name": "sat", "smoothing_size": 4}, 2)
    with pytest.raises(ValidationError, match="head_kernel must be odd"):
        create_method({"name": "tscam", "head_kernel": 2}, 2)
    sat = create_method({"name": "sat", "backbone": {"name": "test_vit"}}, num_classes=2)
    features = sat.encoder(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="sat: the map comes from the spatial token's pass"):
        sat.head_forward([features[-1][:1]])  # not the images of the encoder's last pass
    with pytest.raises(ValueError, match="already carries a SAT spatial token"):
        create_method({"name": "sat"}, num_classes=2, encoder=sat.encoder)


def test_a_method_composed_around_sat_runs_sats_pass() -> None:
    """SAT lives in its encoder (hooks): a method sharing the encoder (Grad-CAM over SAT here, a
    PixelCAM student alike) gets SAT's logits and map from encoder(x) + the classifier's head."""
    torch.manual_seed(0)
    sat = create_method({"name": "sat", "backbone": {"name": "test_vit"}}, num_classes=3).eval()
    composed = create_method({"name": "gradcam", "backbone": {"name": "test_vit"},
                              "classifier": {"name": "sat"}}, num_classes=3).eval()
    composed.load_initial_state(sat.state_dict())
    x, classes = torch.rand(2, 3, 32, 48), torch.tensor([2, 0])
    with torch.no_grad():
        expected = sat(x)
        inner = composed.classifier.head_forward(composed.encoder(x))
    assert torch.allclose(inner.logits, expected.logits, atol=1e-6)
    assert torch.allclose(inner.maps, expected.maps, atol=1e-6)
    logits, maps = composed.localize_with_logits(x, classes)
    assert torch.allclose(logits, expected.logits, atol=1e-5) and maps.shape == (2, 32, 48)
    # a copy of SAT (as a checkpointing trainer might make) carries its own hooks
    clone = copy.deepcopy(sat)
    with torch.no_grad():
        assert torch.allclose(clone(x).maps, expected.maps)
        assert torch.allclose(sat(x).maps, expected.maps)

def test_deit_weights_from_a_local_release_file(tmp_path) -> None:
    """DeiT's released checkpoints hold {"model": state dict with the 1000-class head}: the encoder
    loads it (head keys ignored), position embedding interpolated to any input size."""
    source = _encoder(DEIT)
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.zeros(1000, 192), torch.zeros(1000)
    torch.save({"model": state, "epoch": 300}, tmp_path / "deit_tiny.pth")
    config = {"name": "tscam", "backbone": {"name": DEIT, "pretrained": str(tmp_path / "deit_tiny.pth")}}
    m = create_method(config, num_classes=2).eval()
    assert m.encoder.weights_report == {"ignored": ["head.bias", "head.weight"]}
    assert torch.equal(m.encoder.model.pos_embed, source.model.pos_embed)
    x = torch.rand(1, 3, 40, 72)
    with torch.no_grad():
        assert torch.allclose(m.encoder(x)[-1], source(x)[-1], atol=1e-6)
