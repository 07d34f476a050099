"""Test-time views for map averaging: the flips and the dihedral group of the square.

Tissue has no up or down: a gland rotated by 90° or mirrored is the same gland, so the map of a
rotated or mirrored image, turned back into the image's frame, is as valid a map of the image as its
own. The mean over such views keeps what the maps agree on, the tissue, and averages out what one
view's map owes to orientation: the strided layers' sampling grid, which sits up to half a cell off
the upsampled map's (a stride-32 cell of EfficientNet or ResNet is centred at 32·i, bilinear
upsampling puts it at 32·i + 15.5), and the peaks one view happens to fire on (what the views give
on GlaS: docs/results.md).

Input scales (``method.map_scales``) are views of another kind: the image resized by a factor
(``scale_images``), so that the encoder's grid falls on it more finely (1.5× at 448 px gives a
21×21 map instead of 14×14) or more coarsely, and what the encoder sees of a gland changes size;
each scale's map is resized back to the image's before the mean.

A view is ``(k, mirror)``: rotate by k·90° in the image plane (``torch.rot90`` over the last two
dimensions), then mirror left–right. Every set starts with the identity, whose logits a method
reports; ``from_view`` inverts ``to_view`` on images and maps alike (B×C×H×W or B×H×W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

View = tuple[int, bool]

VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((0, False),),
    # the image, its left–right and top–bottom mirror images, its 180° rotation
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    # the 8 symmetries of the square: 4 rotations, each with and without mirroring
    "d8": tuple((k, mirror) for mirror in (False, True) for k in range(4)),
}


def to_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """``x`` (…×H×W) seen in ``view``: rotated by k·90°, then mirrored left–right."""
    k, mirror = view
    x = torch.rot90(x, k, (-2, -1)) if k % 4 else x
    return x.flip(-1) if mirror else x


def from_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """The inverse of ``to_view``: a map made on the view, back in the image's frame."""
    k, mirror = view
    x = x.flip(-1) if mirror else x
    return torch.rot90(x, -k, (-2, -1)) if k % 4 else x


def scale_images(images: torch.Tensor, factor: float) -> torch.Tensor:
    """B×C×H×W images in [0, 1] resized to round(H·factor)×round(W·factor): bilinear, antialiased
    when shrinking (as PIL's resize), unchanged for factor 1."""
    if factor == 1.0:
        return images
    h, w = images.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    out = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                        antialias=factor < 1.0)
    return out.clamp_(0.0, 1.0)
