"""Joint image / mask / pseudo-label-map transforms (docs/protocol.md, "Preprocessing").

Train: resize to ``resize``² [-> optional Macenko stain normalisation] -> random crop ``crop`` ->
random horizontal and vertical flips -> ColorJitter(.5, .5, .5, .05) [-> optional HED stain
augmentation]. Eval: resize to ``eval_size``² [-> the same stain normalisation]. Images stay RGB
in [0, 1]: the encoder applies the mean/std of its weights (``histocam.models.backbones``). The same
geometry is applied to the mask and the ignore mask (nearest) and to a stored CAM (bilinear,
``align_corners=False``). Eval: resize to ``eval_size``² (no crop); masks nearest, binary.

Nearest-neighbour resizing uses PyTorch's ``nearest`` (source index = floor(dst · scale)), the rule
of OpenCV's INTER_NEAREST used by the reference evaluator for masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from histocam.data.config import DataConfig
from histocam.data.sample import Sample
from histocam.data.stain import hed_augment, macenko_normalize


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """3×H×W float in [0, 1] -> 3×size×size, bilinear with antialiasing (as PIL's resize)."""
    if image.shape[-2:] == (size, size):
        return image
    out = F.interpolate(image[None], (size, size), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def model_input(rgb: np.ndarray, size: int, stain_normalize: str = "none") -> torch.Tensor:
    """The evaluation input of one H×W×3 uint8 RGB image outside a dataset (an image or a slide
    tile to predict): 3×size×size in [0, 1], stain-normalised as the run's data config says, the
    same steps as ``JointTransform`` at evaluation."""
    image = resize_image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
                         .div_(255.0), size)
    return macenko_normalize(image) if stain_normalize == "macenko" else image


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """H×W {0,1} float -> size×size, nearest neighbour."""
    if mask.shape[-2:] == (size, size):
        return mask
    return F.interpolate(mask[None, None], (size, size), mode="nearest")[0, 0]


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The one map resizer: ...×h×w float maps -> ...×H×W, bilinear ``align_corners=False`` (the
    protocol's upsampling; maps are never antialiased). Unchanged when already that size."""
    size = tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def resize_map(cam: torch.Tensor, size: int) -> torch.Tensor:
    """h×w map -> size×size (``resize_maps``)."""
    return resize_maps(cam, (size, size))


@dataclass
class JointTransform:
    """Apply the protocol pipeline to a ``Sample`` (and optionally its stored CAM).

    Returns a dict with ``image`` (3×S×S float RGB in [0, 1]), ``label`` (int64), ``mask`` (S×S float
    in {0, 1}, zeros when the sample has none), ``has_mask`` (bool), ``ignore`` (S×S bool: pixels
    to leave out of the localisation metrics, all False when the sample has no ignore mask),
    ``cam`` (S×S, if given) and ``id``.
    """

    train: bool
    resize: int = 256
    crop: int = 224
    eval_size: int = 224
    color_jitter: bool = True
    stain_augment: float = 0.0
    stain_normalize: str = "none"

    @classmethod
    def from_config(cls, config: DataConfig, train: bool) -> JointTransform:
        return cls(train, config.resize, config.crop, config.eval_size, config.color_jitter,
                   config.stain_augment, config.stain_normalize)

    def __post_init__(self) -> None:
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")
        self._jitter = v2.ColorJitter(0.5, 0.5, 0.5, 0.05)

    def __call__(self, sample: Sample, cam: np.ndarray | torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> dict[str, Any]:
        image = torch.from_numpy(sample.image).permute(2, 0, 1).float().div_(255.0)
        has_mask = sample.mask is not None
        mask = (torch.from_numpy(sample.mask).float() if has_mask
                else torch.zeros(sample.image.shape[:2]))
        ignore = (torch.from_numpy(sample.ignore).float() if sample.ignore is not None
                  else torch.zeros(sample.image.shape[:2]))
        cam_t = None if cam is None else torch.as_tensor(cam, dtype=torch.float32)
        size = self.resize if self.train else self.eval_size
        image, mask = resize_image(image, size), resize_mask(mask, size)
        if self.stain_normalize == "macenko":  # on the whole resized image, before any crop
            image = macenko_normalize(image)
        ignore = resize_mask(ignore, size)
        cam_t = None if cam_t is None else resize_map(cam_t, size)
        if self.train:
            image, mask, ignore, cam_t = self._random_geometry(image, mask, ignore, cam_t,
                                                               generator=generator)
            if self.color_jitter:
                image = self._jitter(image)
            image = hed_augment(image, self.stain_augment, generator)
        out: dict[str, Any] = {
            "image": image, "label": torch.tensor(sample.label, dtype=torch.int64),
            "mask": mask, "has_mask": has_mask, "ignore": ignore > 0.5, "id": sample.id,
        }
        if cam_t is not None:
            out["cam"] = cam_t
        return out

    def _random_geometry(self, *tensors, generator=None):
        """One random crop and flips applied to every tensor given (``None`` passes through)."""
        span = self.resize - self.crop + 1
        top, left = (int(v) for v in torch.randint(span, (2,), generator=generator))
        hflip, vflip = (bool(v) for v in torch.rand(2, generator=generator) < 0.5)
        out = []
        for t in tensors:
            if t is not None:
                t = t[..., top : top + self.crop, left : left + self.crop]
                if hflip:
                    t = t.flip(-1)
                if vflip:
                    t = t.flip(-2)
                t = t.contiguous()
            out.append(t)
        return out
