"""The method interface (docs/design.md): every WSOL method answers forward, loss and localize.

A method is an encoder (``histocam.models``) plus a head plus a loss plus a way to produce a map.
Subclasses set ``Config`` (their typed hyper-parameters), build their head in ``build_head`` and
implement ``head_forward``; built-in maps come from ``MethodOutput.maps`` and are post-processed by
the protocol functions of ``histocam.maps.normalize``. Methods never read files: the trainer
supplies what a batch needs and the run layer supplies initial weights.

Extension points (docs/ARCHITECTURE.md), each with a default that does nothing special:
- ``prepare_batch(batch)``: the training batch before the forward pass (HaS hiding, CutMix mixing);
- ``training_step(batch)``: forward + loss of one step (Max-Min's extra forwards);
- ``on_epoch_end(epoch)``: after each training epoch (schedules, barriers);
- ``needs_cams``: the trainer adds the stored teacher map of every image as ``batch["cam"]``;
- ``load_initial_state(state)``: the weights the run layer starts a method from (a teacher's);
- ``localize_view(images, classes)``: one view's map (``localize_with_logits`` averages it over
  ``config.map_tta``'s test-time views and ``config.map_scales``' input scales);
  ``probability_maps``: whether those maps are probabilities (averaged as they are) rather than
  min–max normalised maps;
- ``self.encoder.stage_modules()`` / ``self.encoder.vit_blocks(x)``: intermediate encoder stages
  (forward hooks for ADL/ACoL/SPG) and ViT block tokens with their attention (TS-CAM/SAT);
- ``ComposedMethod`` (``methods/composed.py``): a method built around a registered classifier
  method that it owns whole (top-down CAMs, seeded students).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from histocam.core.configs import StrictModel
from histocam.maps.normalize import mean_map, minmax_normalize
from histocam.maps.normalize import upsample as upsample_maps
from histocam.maps.views import VIEWS, from_view, scale_images, to_view
from histocam.models.backbones import BackboneConfig, Encoder, create_encoder


class MethodConfig(StrictModel):
    """Common to all methods; subclasses add their hyper-parameters."""

    name: str
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    map_tta: Literal["none", "flips", "d8"] = Field(
        "none", description="test-time views the map is averaged over (histocam.maps.views): "
        "none; flips (the image, its two mirror images, its 180° rotation); d8 (its 8 rotations "
        "and mirror images). Each view's map is turned back into the image's frame; the logits "
        "are the unaugmented image's")
    map_scales: tuple[float, ...] = Field(
        (1.0,), description="input scales the map is averaged over (histocam.maps.views): the "
        "image resized by each factor, its map made there with map_tta's views and resized to "
        "the image's map; (1.0,) is the image as given. The logits are the unscaled image's")

    @field_validator("map_scales")
    @classmethod
    def _check_scales(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("map_scales needs at least one scale, e.g. [1.0]")
        if any(not 0.25 <= s <= 4.0 for s in value):
            raise ValueError(f"map_scales {list(value)}: every scale must be within 0.25 and 4")
        if len(set(value)) != len(value):
            raise ValueError(f"map_scales {list(value)} repeats a scale")
        return value

    def for_inference(self) -> MethodConfig:
        """This config without external weight sources (the checkpoint provides the weights)."""
        return self.model_copy(update={"backbone": self.backbone.model_copy(
            update={"pretrained": False})})


class ClassifierConfig(MethodConfig):
    """An image classifier method (pooling family, supervised bound): it has an image loss."""

    image_loss: Literal["ce", "bce"] = Field(
        "ce", description="ce: softmax cross-entropy; bce: one-vs-rest sigmoid BCE per class")


def image_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """The image-level classification loss.

    ``ce``: softmax cross-entropy, the survey's. ``bce``: one binary cross-entropy per class, image
    of class c positive for c and negative for every other class (the multi-label loss WILDCAT and
    MIL pooling are trained with; Durand et al. 2017 §3.3). With two classes and softmax CE only
    z₁ − z₀ is learnt, so the benign map is pushed towards the negative of the malignant evidence
    although glands are foreground in both classes; BCE with a non-linear pooling (WILDCAT, LSE,
    max) learns each class's evidence against the other class's images instead
    (docs/results.md, GlaS). Predictions are the argmax of the logits either way.
    """
    labels = labels.to(logits.device)
    if kind == "ce":
        return F.cross_entropy(logits, labels)
    if kind == "bce":
        target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"unknown image loss {kind!r} (ce or bce)")


def foreground_probability(pixel_logits: torch.Tensor, size: tuple[int, int] | None
                           ) -> torch.Tensor:
    """The map of a FG/BG pixel head: softmax foreground probability of B×2×h×w logits, bilinear
    to ``size`` (None: the head's own resolution), without min–max (it is a probability)."""
    prob = torch.softmax(pixel_logits.float(), dim=1)[:, 1]
    return upsample_maps(prob, size) if size is not None else prob


@dataclass
class MethodOutput:
    logits: torch.Tensor  # B×K
    features: list[torch.Tensor]  # encoder stages, last = the CAM layer
    maps: torch.Tensor | None = None  # B×K×h×w built-in class maps (None for top-down)
    extras: dict[str, Any] = field(default_factory=dict)


class WSOLMethod(nn.Module, metaclass=abc.ABCMeta):
    """Base class. ``relu_maps``: whether the protocol applies ReLU before min–max (CAM only)."""

    Config: ClassVar[type[MethodConfig]] = ClassifierConfig
    relu_maps: ClassVar[bool] = False
    # maps that are foreground probabilities (PixelCAM, NEGEV, U-Net) are averaged over test-time
    # views as they are; min–max normalised maps are normalised again after averaging
    probability_maps: ClassVar[bool] = False
    needs_cams: ClassVar[bool] = False
    # a frozen image classifier (NEGEV): B-CL carries no information, the trainer's B-CL is B-LOC
    classifier_frozen: ClassVar[bool] = False
    # whether a composed method (top-down CAM, seeded student) may use it as its classifier: its
    # logits come from ``head_forward`` on the encoder's features
    composable: ClassVar[bool] = True
    method_name: ClassVar[str]

    def __init__(self, config: MethodConfig, num_classes: int, *,
                 encoder: Encoder | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.config = config
        self.num_classes = num_classes
        self.encoder = encoder if encoder is not None else create_encoder(config.backbone)
        self.head = self.build_head(self.encoder.out_channels, num_classes)

    # --- each method implements these two
    @abc.abstractmethod
    def build_head(self, channels: int, num_classes: int) -> nn.Module:
        """The layers after the encoder (stored as ``self.head``)."""

    @abc.abstractmethod
    def head_forward(self, features: list[torch.Tensor]) -> MethodOutput:
        """Logits (and built-in maps) from the encoder's feature maps."""

    # --- the interface
    def forward(self, images: torch.Tensor) -> MethodOutput:
        return self.head_forward(self.encoder(images))

    def loss(self, batch: dict[str, Any], output: MethodOutput
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The image loss (``config.image_loss``); methods with extra terms extend this."""
        ce = image_loss(output.logits, batch["label"], self.config.image_loss)
        return ce, {"ce": float(ce.detach())}

    def class_maps(self, output: MethodOutput, classes: torch.Tensor) -> torch.Tensor:
        """Low-resolution B×h×w map of ``classes`` (one class per image), before normalisation."""
        if output.maps is None:
            raise RuntimeError(f"{type(self).__name__} has no built-in maps")
        index = torch.arange(classes.shape[0], device=output.maps.device)
        return output.maps[index, classes.to(output.maps.device)]

    def localize_with_logits(self, images: torch.Tensor, classes: torch.Tensor,
                             upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits B×K, maps in [0, 1]): B×H×W at input resolution, or the normalised
        low-resolution maps (before upsampling) with ``upsample=False``.

        With ``config.map_tta`` the map is the mean of ``localize_view`` over the test-time views
        (``histocam.maps.views``), each turned back into the image's frame, min–max normalised
        again unless the maps are probabilities; the logits are always the unaugmented image's.
        With ``config.map_scales`` the mean also runs over the image resized by each factor
        (``scale_images``): each scale's low-resolution maps are resized bilinearly to the input
        size, or with ``upsample=False`` to the finest scale's map grid, before the one mean."""
        logits, maps = None, []
        for scale in self.config.map_scales:
            scaled = scale_images(images, scale)
            for view in VIEWS[self.config.map_tta]:
                # the image's own scale is upsampled by localize_view, as without scales
                out, m = self.localize_view(to_view(scaled, view), classes,
                                            upsample and scale == 1.0)
                if logits is None and scale == 1.0:  # the identity view comes first
                    logits = out
                maps.append(from_view(m, view))
        if logits is None:  # no unscaled pass among the scales
            logits = self(images).logits
        if len(maps) == 1 and self.config.map_scales == (1.0,):  # the map as localize_view made it
            return logits, maps[0]
        return logits, mean_map(maps, tuple(images.shape[-2:]) if upsample else None,
                                self.probability_maps)

    def localize_view(self, images: torch.Tensor, classes: torch.Tensor,
                      upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One view's (logits, maps) from one forward pass, as ``localize_with_logits`` returns
        them; methods with another kind of map override this, never ``localize_with_logits``."""
        output = self(images)
        low = minmax_normalize(self.class_maps(output, classes).float(), self.relu_maps)
        return output.logits, (upsample_maps(low, tuple(images.shape[-2:])) if upsample else low)

    def localize(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Maps of ``classes`` (the ground-truth class per the protocol) as B×H×W in [0, 1]."""
        return self.localize_with_logits(images, classes)[1]

    # --- extension points (module docstring)
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The training batch as the method trains on it; by default unchanged."""
        return batch

    def training_step(self, batch: dict[str, Any]
                      ) -> tuple[torch.Tensor, dict[str, float], MethodOutput]:
        """(loss, its named parts, the output whose logits count for train accuracy)."""
        output = self(batch["image"])
        loss, parts = self.loss(batch, output)
        return loss, parts, output

    def training_warnings(self, stats: dict[str, float]) -> list[str]:
        """What looks wrong in a training epoch's mean losses ``stats`` (``train_<part>``), in
        words the trainer logs once per run; by default nothing."""
        return []

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the trainer after training epoch ``epoch`` (before its evaluation)."""

    def load_initial_state(self, state: dict[str, torch.Tensor]) -> None:
        """Start from ``state`` (a checkpoint's model weights), strictly."""
        self.load_state_dict(state)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Encoder and head parameters separately (the head gets a larger learning rate)."""
        encoder = list(self.encoder.parameters())
        own = {id(p) for p in encoder}
        head = [p for p in self.parameters() if id(p) not in own]
        return [{"params": encoder, "role": "encoder"}, {"params": head, "role": "head"}]
