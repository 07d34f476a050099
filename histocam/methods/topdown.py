"""Top-down WSOL methods (survey §2.3): an image classifier (``method.classifier``, by default CAM's
GAP + linear head as in the survey; any registered classifier method, e.g. WILDCAT) trained with its
own loss, whose map is produced by interrogating it with a top-down CAM (``histocam.maps``) for the
ground-truth class. Default target layer: the encoder's last stage; LayerCAM fuses the last
``layers`` stages."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from histocam.maps import (
    ISCAM,
    SSCAM,
    AblationCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from histocam.maps.topdown_cam import TopDownCAM
from histocam.methods.base import MethodOutput
from histocam.methods.catalog import register_method
from histocam.methods.composed import ComposedConfig, ComposedMethod


class TopDownConfig(ComposedConfig):
    chunk_size: int = Field(32, ge=1, description="masked inputs per forward (confidence family)")

    def engine_kwargs(self) -> dict[str, Any]:
        """The engine's own hyper-parameters: the fields a subclass adds (minus ``layers``)."""
        own = set(type(self).model_fields) - set(TopDownConfig.model_fields) - {"layers"}
        return {k: getattr(self, k) for k in sorted(own)}


class TopDownMethod(ComposedMethod):
    Config = TopDownConfig
    engine: ClassVar[type[TopDownCAM]]

    def build_head(self, channels, num_classes):  # the classifier's head is the only head
        return nn.Identity()

    def head_forward(self, features):
        out = self.classifier_forward(features)
        return MethodOutput(out.logits, out.features, None, out.extras)

    def loss(self, batch, output):
        return self.classifier.loss(batch, output)

    # training a top-down method is training its classifier, with the classifier's own hooks
    # (HaS hiding, CutMix mixing, ACoL's erasing of the label's region)
    def prepare_batch(self, batch):
        return self.classifier.prepare_batch(batch)

    def training_step(self, batch):
        return self.classifier.training_step(batch)

    def on_epoch_end(self, epoch: int) -> None:
        self.classifier.on_epoch_end(epoch)

    def layer_indices(self) -> list[int]:
        return [len(self.encoder.channels) - 1]

    def engine_kwargs(self) -> dict[str, Any]:
        return self.config.engine_kwargs()

    def _forward_for_cam(self, x: torch.Tensor):
        """(logits, target activations). With the last stage as the only target, the encoder runs
        without recording a graph and the head runs from a leaf copy of its output (the engine's
        contract: the graph starts at the target). Several stages keep the encoder's graph."""
        indices = self.layer_indices()
        if indices == [len(self.encoder.channels) - 1]:
            with torch.no_grad():
                features = self.encoder(x)
            features[-1] = features[-1].detach().requires_grad_(True)
            return self.classifier_forward(features).logits, [features[-1]]
        out = self(x.requires_grad_(True))  # graph to the stages even with a frozen encoder
        return out.logits, [out.features[i] for i in indices]

    def localize_view(self, images, classes, upsample: bool = True):
        engine = self.engine(self, forward_fn=self._forward_for_cam,
                             chunk_size=self.config.chunk_size, **self.engine_kwargs())
        return engine.compute(images, classes, upsample=upsample)


def _top_down(name: str, engine_cls: type[TopDownCAM], config_cls=TopDownConfig, *, paper: str,
              summary: str):
    """Register ``name`` as a classifier whose map comes from ``engine_cls``."""
    cls = type(engine_cls.__name__ + "Method", (TopDownMethod,),
               {"engine": engine_cls, "Config": config_cls, "__doc__": engine_cls.__doc__,
                "__module__": engine_cls.__module__})
    return _register(name, paper, summary)(cls)


def _register(name: str, paper: str, summary: str):
    return register_method(name, family="top-down", paper=paper, summary=summary,
                           map="top-down CAM of the ground-truth class (ReLU, min–max)")


class SmoothConfig(TopDownConfig):
    num_samples: int = Field(10, ge=1)
    noise: float = Field(0.15, ge=0)


class LayerCAMConfig(TopDownConfig):
    layers: int = Field(3, ge=1, description="number of last encoder stages fused")
    gamma: float = Field(2.0, gt=0)


class SSCAMConfig(TopDownConfig):
    num_samples: int = Field(35, ge=1)
    sigma: float = Field(2.0, ge=0)


class ISCAMConfig(TopDownConfig):
    num_samples: int = Field(10, ge=1)


GradCAMMethod = _top_down(
    "gradcam", GradCAM, paper="Selvaraju et al., ICCV 2017",
    summary="Activations weighted by their spatially averaged class-score gradients.")
GradCAMPlusPlusMethod = _top_down(
    "gradcampp", GradCAMPlusPlus, paper="Chattopadhay et al., WACV 2018",
    summary="Activations weighted by positive gradients with second-order pixel coefficients.")
XGradCAMMethod = _top_down(
    "xgradcam", XGradCAM, paper="Fu et al., BMVC 2020",
    summary="Activations weighted by activation-normalised gradients (axiom-based Grad-CAM).")
ScoreCAMMethod = _top_down(
    "scorecam", ScoreCAM, paper="Wang et al., CVPR-W 2020",
    summary="Activations weighted by the class score of the image masked by each activation.")
SmoothGradCAMPlusPlusMethod = _top_down(
    "smoothgradcampp", SmoothGradCAMPlusPlus, SmoothConfig, paper="Omeiza et al., arXiv 2019",
    summary="Grad-CAM++ with gradients averaged over noisy copies of the input.")
SSCAMMethod = _top_down(
    "sscam", SSCAM, SSCAMConfig, paper="Wang et al., arXiv 2020",
    summary="Score-CAM with scores averaged over noisy copies of each masked input.")
ISCAMMethod = _top_down(
    "iscam", ISCAM, ISCAMConfig, paper="Naidu et al., arXiv 2020",
    summary="Score-CAM with scores integrated over progressively scaled masks.")


@_register("layercam", "Jiang et al., TIP 2021",
           "Positive gradients weight each activation position, fused over several stages.")
class LayerCAMMethod(TopDownMethod):
    __doc__ = LayerCAM.__doc__
    Config = LayerCAMConfig
    engine = LayerCAM

    def layer_indices(self):
        n = len(self.encoder.channels)
        return list(range(max(0, n - self.config.layers), n))


@_register("ablationcam", "Desai & Ramaswamy, WACV 2020",
           "Activations weighted by the class-score drop when each one is zeroed.")
class AblationCAMMethod(TopDownMethod):
    __doc__ = AblationCAM.__doc__
    engine = AblationCAM

    def engine_kwargs(self):
        return {"head_fn": self._head_from_last}

    def _head_from_last(self, activation: torch.Tensor) -> torch.Tensor:
        return self.classifier_forward([activation]).logits
