"""NEGEV: negative evidence (Belharbi et al., MIDL 2022, eqs. 1–4; docs/protocol.md,
"Method facts").

A pretrained WSOL classifier g (the teacher's method, started from its B-CL checkpoint by the run
layer) is frozen entirely: encoder and head weights and BatchNorm statistics; it classifies. A
U-Net decoder f (``histocam.methods.decoder``: skips from every encoder stage) on g's encoder is the
only trained part. Per training image and step, n pixels are drawn as foreground ∝ C and n as
background ∝ 1 − C from the teacher's stored map C of the true class (eq. 1, the ``pb`` sampler of
``histocam.methods.sampling``; the paper uses n = 1), trained with the partial cross-entropy over
those pixels (eq. 2). Images of the dataset's fully negative class D⁻ (``DataConfig.
negative_class``, e.g. CAMELYON16 normal patches) get no seeds but the full-negative term: every
pixel background (eq. 3). Eq. 4 makes the two exclusive per image:
    loss = mean over images of 1[X ∈ D⁻] · N(X) + (1 − 1[X ∈ D⁻]) · λ Σ_{p ∈ C⁺ ∪ C⁻} H(Y_p, S_p).
Choices the paper leaves open or states loosely:
- eq. 3 writes −log(1 − S⁰_p) with S⁰ the background map; the text says "predicting all pixels as
  background", which is −log S⁰_p: we implement the text.
- N(X) is eq. 3's sum over Ω when ``negative_term: sum``; the default ``mean`` divides it by |Ω|, so
  that one negative image weighs like one seed rather than like the 50 176 pixels of a 224² image
  against two seeds (the paper's sum with its λ = 1 would make the seed term negligible on
  CAMELYON16). ``none`` drops the term (the paper's ablation, Table 2): D⁻ images are then sampled
  like any other image.
The map is the softmax foreground probability S¹ at the input size, without min–max. Selection is
B-LOC only (the survey: the classifier is frozen, so B-CL carries no information).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from histocam.data.transforms import resize_maps
from histocam.methods.base import MethodOutput, foreground_probability
from histocam.methods.catalog import register_method
from histocam.methods.decoder import DECODER_WIDTHS, UNetDecoder, input_size
from histocam.methods.student import SeededStudent, SeededStudentConfig, seed_loss


class NegevConfig(SeededStudentConfig):
    name: str = "negev"
    n: int = Field(1, ge=0, description="seeds per region per image and step (the paper: 1)")
    lam: float = Field(1.0, ge=0, description="weight λ of the seed term (eq. 4)")
    negative_term: Literal["mean", "sum", "none"] = Field(
        "mean", description="images of the fully negative class: every pixel background, mean or "
        "sum over pixels (eq. 3), or none (ablation)")
    decoder_widths: tuple[int, ...] = Field(DECODER_WIDTHS, description="decoder block widths, "
                                            "deepest first")

    @model_validator(mode="after")
    def _one_negative_rule(self) -> NegevConfig:
        if self.negative_all_background:
            raise ValueError("negev: fully negative images are handled by negative_term (eq. 3), "
                             "not negative_all_background")
        if self.loss_resolution != "full":
            raise ValueError("negev: the decoder's logits are at full resolution (loss_resolution "
                             "low is PixelCAM's option)")
        return self


def negative_evidence_loss(pixel_logits: torch.Tensor, negative: torch.Tensor,
                           reduction: str = "mean") -> torch.Tensor:
    """Eq. 3 per image: −Σ_p log S⁰_p (``sum``) or its mean over pixels (``mean``) for images with
    ``negative`` True, 0 for the others; averaged over all the batch's images."""
    per_pixel = F.cross_entropy(pixel_logits.float(), torch.zeros_like(pixel_logits[:, 0],
                                dtype=torch.long), reduction="none").flatten(1)
    per_image = per_pixel.sum(1) if reduction == "sum" else per_pixel.mean(1)
    return (per_image * negative.to(per_image.dtype)).mean()


@register_method("negev", family="seeded student", paper="Belharbi et al., MIDL 2022",
                 summary="A U-Net decoder on a frozen WSOL classifier, trained from single pixels "
                 "sampled out of its CAM and from fully negative images.",
                 map="foreground probability")
class Negev(SeededStudent):
    Config = NegevConfig
    classifier_frozen = True

    def __init__(self, config, num_classes, *, encoder=None) -> None:
        super().__init__(config, num_classes, encoder=encoder)
        self.classifier.requires_grad_(False)  # g: encoder and head

    def build_head(self, channels, num_classes):
        return UNetDecoder(self.encoder.channels, self.config.decoder_widths)

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()  # frozen: no dropout, BatchNorm statistics unchanged
        return self

    def forward(self, images: torch.Tensor) -> MethodOutput:
        with torch.no_grad():
            features = self.encoder(images)
        return self.head_forward(features, tuple(images.shape[-2:]))

    def head_forward(self, features, size: tuple[int, int] | None = None):
        with torch.no_grad():
            out = self.classifier_forward(features)
        size = size or input_size(features, self.encoder.reductions)
        out.extras["pixel_logits"] = self.head(features, size)
        return out

    def loss(self, batch, output):
        if "cam" not in batch:
            raise KeyError("negev trains from stored teacher maps: the batch has no 'cam' (the run "
                           "needs `cams`; `histocam negev` sets it)")
        logits = resize_maps(output.extras["pixel_logits"].float(), tuple(batch["cam"].shape[-2:]))
        negative = batch.get("negative")
        if negative is None or self.config.negative_term == "none":
            negative = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        seeds = self.seeds({"cam": batch["cam"]}, tuple(logits.shape[-2:]))
        seeds[negative.to(seeds.device)] = 0.0  # eq. 4: the two terms are exclusive
        seed_term, parts = seed_loss(logits, seeds)
        full_negative = negative_evidence_loss(logits, negative, self.config.negative_term)
        loss = self.config.lam * seed_term + full_negative
        return loss, {**parts, "negative": float(full_negative.detach())}

    def localize_view(self, images, classes, upsample: bool = True):
        output = self(images)
        return output.logits, foreground_probability(output.extras["pixel_logits"], None)

    def parameter_groups(self):
        return [{"params": list(self.head.parameters()), "role": "head"}]
