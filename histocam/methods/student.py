"""The seeded foreground/background student (PixelCAM; NEGEV builds on the same base).

A classifier method (``method.classifier``: the teacher's, started from the teacher's weights by the
run layer) plus a pixel head on the shared encoder, trained from pixel pseudo-labels sampled out of
the teacher's stored maps: loss = image loss of the classifier + λ · Σ_{p ∈ C⁺ ∪ C⁻} H(y'_p, f(F)_p)
(PixelCAM eq. 3): the sum over an image's seeds, averaged over the batch's images, as the image loss
is. The trainer supplies the stored map of each image as ``batch["cam"]`` (``needs_cams``) and, for
datasets with a fully negative class (``DataConfig.negative_class``), ``batch["negative"]``; the
seeds are redrawn at every step (``histocam.methods.sampling``), or with ``seeds: expected`` every
pixel is weighted by its probability of being drawn (our option: the same loss in expectation,
without the sampling noise; docs/protocol.md, "Deviations from the papers"). The map is the softmax
foreground probability of the pixel head, bilinear to the input, without min–max.

A subclass says what the pixel head is (``build_head``) and which features it reads
(``pixel_features``: the last stage for PixelCAM's linear classifier; all stages for a decoder).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from histocam.data.transforms import resize_maps
from histocam.methods.base import foreground_probability
from histocam.methods.composed import ComposedConfig, ComposedMethod
from histocam.methods.sampling import expected_seeds, one_hot_seeds, sample_pseudo_labels


class SeededStudentConfig(ComposedConfig):
    n: int = Field(5, ge=0, description="seeds per region per image and step")
    lam: float = Field(0.1, ge=0, description="weight λ of the pixel loss (a sum over seeds)")
    sampler: Literal["pb", "th", "static"] = "pb"
    loss_resolution: Literal["full", "low"] = Field(
        "full", description="full: pixel logits upsampled to the stored map; low: the map "
        "downsampled to the feature grid")
    negative_all_background: bool = Field(
        False, description="images of the fully negative class: every pixel a background seed "
        "(else n uniform background seeds)")
    seeds: Literal["drawn", "expected"] = Field(
        "drawn", description="drawn: n seeds per region redrawn at every step (the papers); "
        "expected: every pixel weighted by its probability of being drawn, the same loss in "
        "expectation without the sampling noise")


def partial_cross_entropy(logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Σ over each image's pixels of −Σ_c seeds_c · log softmax_c(logits), mean over images.

    ``logits`` B×2×H×W; ``seeds`` B×2×H×W weights (``histocam.methods.sampling``): with one-hot
    drawn seeds this is eq. 3's Σ_{p ∈ C⁺ ∪ C⁻} H(y'_p, f(F_p)), the unlabelled pixels counting 0;
    with expected seeds, its expectation over the draw. Zero (with a graph) without seeds.
    """
    per_pixel = -(seeds * F.log_softmax(logits, dim=1)).sum(1)
    return per_pixel.flatten(1).sum(1).mean()


def uninformed_pixel_loss(seeds: torch.Tensor) -> torch.Tensor:
    """The ``partial_cross_entropy`` of a head that says ½ at every pixel (as the zero-initialised
    head does): ln 2 per seed, summed over each image's seeds, mean over images.

    A pixel head that learns stays near or below it; one whose epoch loss stays clearly above it
    does worse than saying nothing (``SeededStudent.training_warnings``)."""
    return seeds.flatten(1).sum(1).mean() * math.log(2.0)


def seed_loss(logits: torch.Tensor, seeds: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The seed term of every seeded student and its logged parts: ``pixel`` (the loss) and
    ``pixel_chance`` (its ``uninformed_pixel_loss``, which ``training_warnings`` compares it with)."""
    pixel = partial_cross_entropy(logits, seeds)
    return pixel, {"pixel": float(pixel.detach()), "pixel_chance": float(uninformed_pixel_loss(seeds))}


DIVERGING_RATIO = 1.1  # pixel loss / uninformed loss above which the head is reported as diverging


class SeededStudent(ComposedMethod):
    Config = SeededStudentConfig
    needs_cams = True
    probability_maps = True

    def pixel_features(self, features: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """What the pixel head reads: the encoder's last stage."""
        return features[-1]

    def head_forward(self, features):
        out = self.classifier_forward(features)
        out.extras["pixel_logits"] = self.head(self.pixel_features(features))
        return out

    def pseudo_labels(self, batch: dict, size: tuple[int, int]) -> torch.Tensor:
        """B×H×W seeds drawn from the batch's teacher maps (``sample_pseudo_labels``)."""
        cams = resize_maps(batch["cam"].float(), size)
        c = self.config
        return sample_pseudo_labels(cams, c.n, c.sampler, negative=batch.get("negative"),
                                    negative_all_background=c.negative_all_background)

    def seeds(self, batch: dict, size: tuple[int, int]) -> torch.Tensor:
        """B×2×H×W seed weights of this step: the drawn ``pseudo_labels`` one-hot, or with
        ``seeds: expected`` every pixel's probability of being drawn (``expected_seeds``)."""
        c = self.config
        if c.seeds == "drawn":
            return one_hot_seeds(self.pseudo_labels(batch, size))
        return expected_seeds(resize_maps(batch["cam"].float(), size), c.n, c.sampler,
                              negative=batch.get("negative"),
                              negative_all_background=c.negative_all_background)

    def loss(self, batch, output):
        if "cam" not in batch:
            raise KeyError(f"{self.method_name} trains from stored teacher maps: the batch has no "
                           "'cam' (the run needs `cams`; `histocam pixelcam` sets it)")
        image, parts = self.classifier.loss(batch, output)
        logits = output.extras["pixel_logits"].float()
        if self.config.loss_resolution == "full":
            logits = resize_maps(logits, tuple(batch["cam"].shape[-2:]))
        pixel, pixel_parts = seed_loss(logits, self.seeds(batch, tuple(logits.shape[-2:])))
        return image + self.config.lam * pixel, {**parts, **pixel_parts}

    def training_warnings(self, stats: dict[str, float]) -> list[str]:
        """Report a pixel head whose epoch loss on its seeds is above that of a head saying ½
        everywhere by more than ``DIVERGING_RATIO``: it overshoots rather than learns.

        One SGD step moves a seed's logit by about lr · ‖F_p‖² · |p − y'|, so a rate that suits
        one encoder's features and one teacher's seeds overshoots with others; the rate that
        learns depends on both (docs/results.md), so the symptom, not the
        feature scale, is what is checked."""
        pixel, chance = stats.get("train_pixel"), stats.get("train_pixel_chance")
        if pixel is None or not chance or pixel <= DIVERGING_RATIO * chance:
            return []
        return [f"the pixel head's loss on its seeds ({pixel:.3f} per image) is "
                f"{pixel / chance:.2f}× that of a head saying ½ everywhere ({chance:.3f}): it is "
                "not learning them but jumping between batches. Its learning rate (train.lr × "
                "train.head_lr_multiplier) is most likely too large for these features and seeds; "
                "try a 10–100× smaller train.head_lr_multiplier"]

    def localize_view(self, images, classes, upsample: bool = True):
        output = self(images)
        size = tuple(images.shape[-2:]) if upsample else None
        return output.logits, foreground_probability(output.extras["pixel_logits"], size)
