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
