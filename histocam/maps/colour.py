"""Maps made from an image's colour alone: what a map that learnt nothing scores.

The all-ones map (``chance``, the foreground fraction) is the floor every PxAP table shows. A map
that only knows that glands and nuclei are darker than stroma and glass is a second one, the
*colour floor*: a weakly supervised map below it has not learnt more than colour. Each map is
computed from the RGB image in [0, 1] at the evaluation size, min–max normalised per image like a
built-in map (no ReLU), and scored with the protocol's PxAP (docs/protocol.md, "Metrics").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from histocam.data.config import DataConfig
from histocam.data.transforms import JointTransform
from histocam.maps.normalize import minmax_normalize
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.protocol import Batch
from histocam.metrics.pxap import PxAP, chance_pxap


def _haematoxylin(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hed

    return rgb2hed(rgb)[..., 0]


def _eosin(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hed

    return rgb2hed(rgb)[..., 1]


def _saturation(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hsv

    return rgb2hsv(rgb)[..., 1]


#: name -> map of an H×W×3 RGB image in [0, 1] (float64). ``darkness`` is the colour floor.
COLOUR_MAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "darkness": lambda rgb: 1.0 - rgb.mean(axis=2),
    "haematoxylin": _haematoxylin,
    "eosin": _eosin,
    "saturation": _saturation,
    "brightness": lambda rgb: rgb.mean(axis=2),
}
COLOUR_FLOOR = "darkness"


def colour_map_pxap(dataset, data: DataConfig, maps: Sequence[str] = (COLOUR_FLOOR,),
                    per_image: dict[str, PerImageScores] | None = None) -> dict[str, float]:
    """PxAP of each named colour map on ``dataset`` (images with a mask) at the evaluation size of
    ``data``, and ``chance`` on the same pixels. Returns ``{"chance": ..., name: ...}``. With
    ``per_image`` (map name -> ``PerImageScores``), each named map's per-image scores (AP included,
    by image id) are added there too, for paired tests against a model's per-image AP."""
    unknown = [m for m in maps if m not in COLOUR_MAPS]
    if unknown:
        raise ValueError(f"unknown colour maps {unknown} (known: {', '.join(COLOUR_MAPS)})")
    transform = JointTransform.from_config(data, train=False)
    meters = {name: PxAP() for name in maps}
    for k in range(len(dataset)):
        sample = dataset[k]
        item = transform(sample)
        if not bool(item["has_mask"]):
            continue
        rgb = item["image"].permute(1, 2, 0).double().numpy()
        mask, ignore = item["mask"][None] > 0.5, item["ignore"][None]
        for name, meter in meters.items():
            raw = torch.from_numpy(COLOUR_MAPS[name](rgb).astype(np.float32))[None]
            batch = Batch(ids=[sample.id], maps=minmax_normalize(raw, relu=False), masks=mask,
                          ignore=ignore)
            meter.update(batch)
            if per_image is not None and name in per_image:
                per_image[name].update(batch)
    first = meters[maps[0]]  # every meter saw the same pixels
    return {"chance": chance_pxap(first.fg.numpy(), first.bg.numpy()),
            **{name: meter.compute() for name, meter in meters.items()}}
