"""Max-Min uncertainty (Belharbi et al., IEEE TMI 2022, eqs. 3–12; docs/protocol.md,
"Method facts").

A localiser M and a classifier C share one encoder. M is a WILDCAT head (modalities per class, kmax,
kmin, α; dropout before its 1×1 convolution; §3.3(a)) that also classifies the full image X (CE, "to
boost the gradient at M"). Its mask is the winning class map made differentiable as the sum of the
class maps weighted by M's posterior p̂ on X, min–max normalised per image (eq. 12's σ presumes maps
in [0, 1]; the paper does not say how they get there), bilinear to the input, and pseudo-binarised
by eq. 12: M⁺ = sigmoid(ω (M − σ)); M⁻ = 1 − M⁺ (σ fixed; docs/protocol.md, "Method facts", notes
the authors' code moves it from 0.15 to 0.2, which the paper does not describe). C (a WILDCAT head
of its own on the shared encoder) classifies the foreground X⁺ = X ⊙ M⁺ and the background X⁻ = X ⊙
M⁻, masked in the encoder's normalised space (a hidden pixel is the weights' mean colour, i.e. zero
input).
The loss (eq. 7, plus M's own CE):
    H(p, p̂⁺) + λ R(p̂⁻) − (1/t) [log s⁺ + log s⁻] + H(p, p̂_M),
with R = −H(p̂⁻) (EEM, eq. 4) or H(q, p̂⁻) with q uniform (SEM, eq. 6), s± = Σ_z M±(z) (eqs. 10–11)
and t the log-barrier parameter: t₀, × growth after every epoch, capped (GlaS: 5, 1.01, 10). Every
term is active with its own weight: the authors' port in the survey's code multiplies some of them
by zero (docs/protocol.md, "Deviations from the papers"), which is not reproduced here;
``size_term: false`` drops the barrier (ablation). Inference (Algorithm 1): the map is M⁺ and the
class is argmax p̂⁺, C on X⁺. The evaluated map is the protocol's (docs/protocol.md, "Maps": Max-Min
is a built-in map): M⁺ at the feature resolution, min–max per image, then bilinear;
``map_normalization: none`` gives M⁺ itself at the input size, as it masks X. A method composed
around a classifier (top-down CAMs, seeded students) cannot take Max-Min as its classifier: its
class comes from a second pass on the masked image, not from a head on the features.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from histocam.maps.normalize import minmax_normalize
from histocam.maps.normalize import upsample as upsample_maps
from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import register_method
from histocam.methods.wildcat import wildcat_pool


class MaxMinConfig(ClassifierConfig):
    name: str = "maxmin"
    regularizer: Literal["eem", "sem"] = Field(
        "eem", description="eem: −entropy of p̂⁻ (eq. 4); sem: cross-entropy to uniform (eq. 6)")
    lam: float = Field(1e-7, ge=0, description="weight λ of the background uncertainty term "
                       "(the paper's GlaS value)")
    sigma: float = Field(0.15, description="eq. 12 threshold σ")
    omega: float = Field(5.0, gt=0, description="eq. 12 sharpness ω")
    size_term: bool = Field(True, description="the log-barrier size terms of eq. 7")
    t_start: float = Field(5.0, gt=0, description="initial log-barrier t")
    t_growth: float = Field(1.01, ge=1, description="t multiplied by this after every epoch")
    t_max: float = Field(10.0, gt=0, description="cap of t")
    modalities: int = Field(5, ge=1, description="WILDCAT maps per class")
    kmax: float = Field(0.3, gt=0, description="WILDCAT top fraction (or count)")
    kmin: float = Field(0.0, ge=0, description="WILDCAT bottom fraction (or count)")
    alpha: float = Field(0.6, ge=0, description="WILDCAT weight of the bottom positions")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the WILDCAT convolutions")
    map_normalization: Literal["minmax", "none"] = Field(
        "minmax", description="minmax: the protocol's per-image min–max of M⁺ (feature "
        "resolution, then bilinear); none: M⁺ at the input size as it masks X")

    @model_validator(mode="after")
    def _softmax_posterior(self) -> MaxMinConfig:
        if self.image_loss != "ce":
            raise ValueError("maxmin: the terms of eq. 7 are defined on softmax posteriors "
                             "(image_loss: ce)")
        return self


def uncertainty_term(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """R(p̂) of eq. 8, mean over images: EEM −H(p̂) = Σ p̂ log p̂ (eq. 4), SEM H(q, p̂) =
    −(1/c) Σ log p̂ (eq. 6). Both are minimal at the uniform posterior."""
    log_p = F.log_softmax(logits.float(), dim=1)
    if kind == "eem":
        return (log_p.exp() * log_p).sum(1).mean()
    if kind == "sem":
        return -log_p.mean(1).mean()
    raise ValueError(f"unknown regularizer {kind!r} (eem or sem)")


def pseudo_binarize(maps: torch.Tensor, sigma: float, omega: float) -> torch.Tensor:
    """Eq. 12: sigmoid(ω (M − σ))."""
    return torch.sigmoid(omega * (maps - sigma))


def log_barrier(foreground: torch.Tensor, t: float) -> torch.Tensor:
    """−(1/t) [log s⁺ + log s⁻] of eq. 7, s± the sums of M⁺ and 1 − M⁺ (eqs. 10–11) over each
    B×H×W mask; mean over images."""
    s_fg = foreground.flatten(1).sum(1).clamp_min(1e-6)
    s_bg = (1.0 - foreground).flatten(1).sum(1).clamp_min(1e-6)
    return -(s_fg.log() + s_bg.log()).mean() / t


@register_method("maxmin", family="masking", paper="Belharbi et al., IEEE TMI 2022",
                 summary="A localiser's soft mask, with the classifier certain on the masked "
                 "foreground and maximally uncertain on the background.",
                 map="foreground mask M⁺")
class MaxMin(WSOLMethod):
    Config = MaxMinConfig
    composable = False  # its class needs the masked second pass (module docstring)

    def __init__(self, config, num_classes, *, encoder=None) -> None:
        super().__init__(config, num_classes, encoder=encoder)
        # the log-barrier t: a buffer, so that checkpoints (and resume) keep its schedule
        self.register_buffer("barrier_t", torch.tensor(float(config.t_start)))

    @property
    def probability_maps(self) -> bool:  # M⁺ itself with ``map_normalization: none``
        return self.config.map_normalization == "none"

    def build_head(self, channels, num_classes):
        m = self.config.modalities
        return nn.ModuleDict({"dropout": nn.Dropout(self.config.dropout),
                              "localizer": nn.Conv2d(channels, num_classes * m, 1),
                              "classifier": nn.Conv2d(channels, num_classes * m, 1)})

    def _wildcat(self, which: str, features: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        f = self.head["dropout"](features[-1])
        b, _, h, w = f.shape
        maps = self.head[which](f).view(b, self.num_classes, c.modalities, h, w).mean(dim=2)
        return wildcat_pool(maps, c.kmax, c.kmin, c.alpha), maps

    def _masked(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """X ⊙ M in the encoder's normalised space: the hidden part becomes the weights' mean."""
        mean = self.encoder.mean
        return mean + (images - mean) * mask[:, None]

    def head_forward(self, features):
        """The localiser's view: WILDCAT logits of X and the soft foreground mask at the feature
        resolution (``extras["mask"]``, eq. 12 applied)."""
        logits, maps = self._wildcat("localizer", features)
        weighted = (F.softmax(logits.float(), dim=1)[:, :, None, None] * maps.float()).sum(1)
        mask = pseudo_binarize(minmax_normalize(weighted, relu=False), self.config.sigma,
                               self.config.omega)
        return MethodOutput(logits, features, None, {"weighted_map": weighted, "mask": mask})

    def _steps(self, images: torch.Tensor) -> tuple[MethodOutput, torch.Tensor, torch.Tensor]:
        """(localiser output, M⁺ at the input size, C's logits on X⁺)."""
        local = self.head_forward(self.encoder(images))
        weighted = minmax_normalize(local.extras["weighted_map"], relu=False)
        mask = pseudo_binarize(upsample_maps(weighted, tuple(images.shape[-2:])),
                               self.config.sigma, self.config.omega)
        logits_fg, _ = self._wildcat("classifier", self.encoder(self._masked(images, mask)))
        return local, mask, logits_fg

    def forward(self, images: torch.Tensor) -> MethodOutput:
        """Algorithm 1: C's logits on X⁺ (the class); ``extras``: M⁺ at the input size, M's
        logits on X. Training adds C on X⁻ in ``loss``."""
        local, mask, logits_fg = self._steps(images)
        return MethodOutput(logits_fg, local.features, None,
                            {"foreground": mask, "localizer_logits": local.logits})

    def loss(self, batch, output):
        """Eq. 7 plus M's CE: C on X⁻ is the third forward pass of a training step."""
        images, labels = batch["image"], batch["label"].to(output.logits.device)
        mask = output.extras["foreground"]
        logits_bg, _ = self._wildcat("classifier", self.encoder(self._masked(images, 1.0 - mask)))
        c = self.config
        fg = F.cross_entropy(output.logits.float(), labels)
        loc = F.cross_entropy(output.extras["localizer_logits"].float(), labels)
        bg = uncertainty_term(logits_bg, c.regularizer)
        size = log_barrier(mask, float(self.barrier_t)) if c.size_term else fg.new_zeros(())
        loss = fg + c.lam * bg + size + loc
        return loss, {"ce_fg": float(fg.detach()), "uncertainty_bg": float(bg.detach()),
                      "size": float(size.detach()), "ce_localizer": float(loc.detach())}

    def on_epoch_end(self, epoch: int) -> None:
        c = self.config
        self.barrier_t.fill_(min(float(self.barrier_t) * c.t_growth, c.t_max))

    def localize_view(self, images, classes, upsample: bool = True):
        """M⁺ (class-agnostic, Algorithm 1) and C's logits on X⁺; the map min–max normalised per
        the protocol unless ``map_normalization: none`` (module docstring)."""
        local, mask, logits_fg = self._steps(images)
        if self.config.map_normalization == "none":
            return logits_fg, (mask if upsample else local.extras["mask"]).float()
        low = minmax_normalize(local.extras["mask"].float(), relu=False)
        return logits_fg, upsample_maps(low, tuple(images.shape[-2:])) if upsample else low
