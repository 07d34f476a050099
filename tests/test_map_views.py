"""Test-time views (``method.map_tta``): exact inverses, an equivariant averaged map, the mean
of the views' maps computed by hand, and logits that stay the unaugmented image's."""

from __future__ import annotations

import pydantic
import pytest
import torch

from histocam.maps.normalize import minmax_normalize
from histocam.maps.views import VIEWS, from_view, to_view
from histocam.methods import create_method

TINY = {"name": "test_resnet"}
# a built-in pooling map, two top-down maps, and the probability maps of PixelCAM and U-Net
NAMES = ["cam", "wildcat", "gradcampp", "layercam", "pixelcam", "unet"]
EXTRA = {"pixelcam": {"head_init": "default"}}  # a zero-initialised head maps every pixel to ½


def _method(name: str, tta: str):
    torch.manual_seed(0)
    config = {"name": name, "backbone": TINY, "map_tta": tta, **EXTRA.get(name, {})}
    return create_method(config, num_classes=3).eval()


@pytest.mark.parametrize("shape", [(2, 5, 7, 11), (3, 7, 11), (7, 11)])
def test_from_view_inverts_to_view(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    for views in VIEWS.values():
        for view in views:
            assert torch.equal(from_view(to_view(x, view), view), x)


def test_view_sets_are_the_dihedral_group_and_its_flips() -> None:
    x = torch.arange(25.0).reshape(5, 5)
    d8 = [to_view(x, v) for v in VIEWS["d8"]]
    assert len(d8) == 8 and len({tuple(m.flatten().tolist()) for m in d8}) == 8
    # by hand: the two mirror images, the 90° rotation and the transpose are all in the group
    for g in (x.flip(-1), x.flip(-2), x.flip(-2, -1), x.T, torch.rot90(x, 1, (0, 1))):
        assert any(torch.equal(g, m) for m in d8)
    flips = [to_view(x, v) for v in VIEWS["flips"]]
    assert [m.tolist() for m in flips] == [x.tolist(), x.flip(-1).tolist(), x.flip(-2).tolist(),
                                           x.flip(-2, -1).tolist()]
    assert all(view == (0, False) for view in (VIEWS[k][0] for k in VIEWS))  # identity first


@pytest.mark.parametrize("name", NAMES)
def test_d8_map_turns_with_the_image(name: str) -> None:
    """Averaged over the whole group, the map of a rotated or mirrored image is the rotated or
    mirrored map, exactly (up to float rounding), on a non-square input too."""
    m = _method(name, "d8")
    x = torch.randn(2, 3, 40, 56)
    classes = torch.tensor([2, 0])
    with torch.no_grad():
        base = m.localize(x, classes)
        for view in VIEWS["d8"][1:]:
            assert torch.allclose(m.localize(to_view(x, view), classes), to_view(base, view),
                                  atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_flips_map_is_the_mean_of_the_mirrored_maps(name: str) -> None:
    """``flips`` by hand, without ``histocam.maps.views``: the mean of the maps of the image and of
    its mirror images, each mirrored back; min–max again for CAMs, as it is for probabilities."""
    plain, averaged = _method(name, "none"), _method(name, "flips")
    x = torch.randn(3, 3, 40, 56)
    classes = torch.tensor([1, 2, 0])
    with torch.no_grad():
        logits, maps = averaged.localize_with_logits(x, classes)
        mean = sum(plain.localize(x.flip(dims), classes).flip(dims)
                   for dims in ((), (-1,), (-2,), (-2, -1))) / 4
        plain_logits = plain(x).logits
    expected = mean if averaged.probability_maps else minmax_normalize(mean, relu=False)
    assert torch.allclose(maps, expected, atol=1e-5)
    assert torch.equal(logits, plain_logits)  # the unaugmented image's logits
    assert not torch.allclose(maps, plain.localize(x, classes), atol=1e-3)  # it did average


def test_probability_maps_are_not_stretched_by_averaging() -> None:
    m = _method("pixelcam", "d8")
    with torch.no_grad():
        maps = m.localize(torch.randn(2, 3, 40, 56), torch.tensor([0, 1]))
    assert m.probability_maps and not _method("cam", "d8").probability_maps
    assert float(maps.amax()) < 1 and float(maps.amin()) > 0  # a mean of probabilities


def test_unknown_view_set_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="map_tta"):
        create_method({"name": "cam", "backbone": TINY, "map_tta": "d4"}, num_classes=2)


def test_views_belong_to_the_composed_method_not_its_classifier() -> None:
    with pytest.raises(ValueError, match="method.map_tta, not method.classifier.map_tta"):
        create_method({"name": "gradcampp", "backbone": TINY,
                       "classifier": {"name": "cam", "map_tta": "d8"}}, num_classes=2)
    m = create_method({"name": "gradcampp", "backbone": TINY, "map_tta": "d8"}, num_classes=2)
    saved = m.config.model_dump(mode="json")
    assert saved["map_tta"] == "d8" and "map_tta" not in saved["classifier"]


# --- input scales (``method.map_scales``)

def _scaled(name: str, scales: tuple[float, ...], tta: str = "none"):
    torch.manual_seed(0)
    config = {"name": name, "backbone": TINY, "map_tta": tta, "map_scales": list(scales),
              **EXTRA.get(name, {})}
    return create_method(config, num_classes=3).eval()


def _resize(x: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of B×H×W maps or B×C×H×W images, written out here (not the library's)."""
    flat = x[:, None] if x.dim() == 3 else x
    out = torch.nn.functional.interpolate(flat, size=size, mode="bilinear", align_corners=False,
                                          antialias=antialias)
    return out[:, 0] if x.dim() == 3 else out


@pytest.mark.parametrize("name", NAMES)
def test_scales_map_is_the_mean_of_the_resized_images_maps(name: str) -> None:
    """Scales 1 and 0.5 by hand: the low-resolution map of the image and of the image halved
    (antialiased), each bilinear to the input size, averaged, min–max again for CAMs."""
    plain, scaled = _method(name, "none"), _scaled(name, (1.0, 0.5))
    x = torch.rand(2, 3, 64, 96)
    classes = torch.tensor([1, 2])
    with torch.no_grad():
        logits, maps = scaled.localize_with_logits(x, classes)
        half = _resize(x, (32, 48), antialias=True)
        lows = [plain.localize_with_logits(v, classes, upsample=False)[1] for v in (x, half)]
        mean = sum(_resize(low.float(), (64, 96)) for low in lows) / 2
        plain_logits = plain(x).logits
    expected = mean if scaled.probability_maps else minmax_normalize(mean, relu=False)
    assert maps.shape == (2, 64, 96)
    assert torch.allclose(maps, expected.clamp(0, 1), atol=1e-5)
    assert torch.equal(logits, plain_logits)  # the unscaled image's logits
    assert not torch.allclose(maps, plain.localize(x, classes), atol=1e-3)  # it did average


def test_scales_with_views_average_every_view_of_every_scale() -> None:
    """flips × (1, 1.5) by hand: eight maps, each turned back and resized, one mean."""
    plain, scaled = _method("cam", "none"), _scaled("cam", (1.0, 1.5), "flips")
    x = torch.rand(2, 3, 64, 64)
    classes = torch.tensor([0, 2])
    with torch.no_grad():
        maps = scaled.localize(x, classes)
        parts = []
        for image in (x, _resize(x, (96, 96))):
            for dims in ((), (-1,), (-2,), (-2, -1)):
                low = plain.localize_with_logits(image.flip(dims), classes, upsample=False)[1]
                parts.append(_resize(low.flip(dims).float(), (64, 64)))
    expected = minmax_normalize(sum(parts) / len(parts), relu=False)
    assert torch.allclose(maps, expected, atol=1e-5)


def test_scales_without_the_image_itself_still_report_its_logits() -> None:
    plain, scaled = _method("wildcat", "none"), _scaled("wildcat", (1.5,))
    x = torch.rand(3, 3, 64, 64)
    classes = torch.tensor([0, 1, 2])
    with torch.no_grad():
        logits, maps = scaled.localize_with_logits(x, classes)
        low = plain.localize_with_logits(_resize(x, (96, 96)), classes, upsample=False)[1]
        assert torch.equal(logits, plain(x).logits)
    assert torch.allclose(maps, minmax_normalize(_resize(low.float(), (64, 64)), relu=False),
                          atol=1e-5)


def test_scales_without_upsampling_keep_the_finest_grid() -> None:
    """Stored teacher maps (``upsample=False``) of scales (1, 2) are on the 2× image's grid."""
    plain, scaled = _method("cam", "none"), _scaled("cam", (1.0, 2.0))
    x = torch.rand(2, 3, 64, 64)
    classes = torch.tensor([0, 1])
    with torch.no_grad():
        coarse = plain.localize_with_logits(x, classes, upsample=False)[1]
        fine = plain.localize_with_logits(_resize(x, (128, 128)), classes, upsample=False)[1]
        _, maps = scaled.localize_with_logits(x, classes, upsample=False)
    assert fine.shape[-1] == 2 * coarse.shape[-1] and maps.shape == fine.shape
    expected = minmax_normalize((_resize(coarse.float(), fine.shape[-2:]) + fine) / 2, relu=False)
    assert torch.allclose(maps, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["gradcampp", "pixelcam"])
def test_scales_batch_equals_one_image_at_a_time(name: str) -> None:
    m = _scaled(name, (0.75, 1.0, 1.5), "flips")
    x = torch.rand(3, 3, 48, 80)
    classes = torch.tensor([2, 0, 1])
    with torch.no_grad():
        batch = m.localize(x, classes)
        single = torch.cat([m.localize(x[i : i + 1], classes[i : i + 1]) for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-5)


@pytest.mark.parametrize("scales, match", [([], "at least one scale"), ([1.0, 5.0], "within"),
                                           ([0.1], "within"), ([1.0, 1.0], "repeats")])
def test_bad_scales_are_rejected(scales: list[float], match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        create_method({"name": "cam", "backbone": TINY, "map_scales": scales}, num_classes=2)


def test_scales_belong_to_the_composed_method_not_its_classifier() -> None:
    with pytest.raises(ValueError, match="method.map_scales, not method.classifier.map_scales"):
        create_method({"name": "layercam", "backbone": TINY,
                       "classifier": {"name": "cam", "map_scales": [1.0, 1.5]}}, num_classes=2)
    m = create_method({"name": "layercam", "backbone": TINY, "map_scales": [1.0, 1.5]},
                      num_classes=2)
    saved = m.config.model_dump(mode="json")
    assert saved["map_scales"] == [1.0, 1.5] and "map_scales" not in saved["classifier"]
