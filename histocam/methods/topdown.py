"""Top-down WSOL methods (survey §2.3): a classifier trained with the GAP head (as CAM), whose map
is produced by interrogating it with a top-down CAM (``histocam.cams``) for the ground-truth class.
Default target layer: the encoder's last stage; LayerCAM fuses the last ``layers`` stages."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from histocam.cams import (
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
from histocam.cams.base import TopDownCAM
from histocam.methods.base import MethodConfig, MethodOutput
from histocam.methods.cam import CAM
from histocam.methods.registry import register_method


class TopDownConfig(MethodConfig):
    chunk_size: int = Field(32, ge=1, description="masked inputs per forward (confidence family)")


class TopDownMethod(CAM):
    Config = TopDownConfig
    engine: ClassVar[type[TopDownCAM]]

    def layer_indices(self) -> list[int]:
        return [len(self.encoder.channels) - 1]

    def engine_kwargs(self) -> dict[str, Any]:
        return {}

    def _forward_for_cam(self, x: torch.Tensor):
        out = self(x)
        return out.logits, [out.features[i] for i in self.layer_indices()]

    def localize_with_logits(self, images, classes, upsample: bool = True):
        engine = self.engine(self, forward_fn=self._forward_for_cam,
                             chunk_size=self.config.chunk_size, **self.engine_kwargs())
        return engine.compute(images, classes, upsample=upsample)


def _top_down(name: str, engine_cls: type[TopDownCAM], config_cls=TopDownConfig):
    cls = type(engine_cls.__name__ + "Method", (TopDownMethod,),
               {"engine": engine_cls, "Config": config_cls, "__doc__": engine_cls.__doc__,
                "__module__": engine_cls.__module__})
    return register_method(name)(cls)


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


GradCAMMethod = _top_down("gradcam", GradCAM)
GradCAMPlusPlusMethod = _top_down("gradcampp", GradCAMPlusPlus)
XGradCAMMethod = _top_down("xgradcam", XGradCAM)
ScoreCAMMethod = _top_down("scorecam", ScoreCAM)


@register_method("smoothgradcampp")
class SmoothGradCAMPlusPlusMethod(TopDownMethod):
    __doc__ = SmoothGradCAMPlusPlus.__doc__
    Config = SmoothConfig
    engine = SmoothGradCAMPlusPlus

    def engine_kwargs(self):
        return {"num_samples": self.config.num_samples, "noise": self.config.noise}


@register_method("layercam")
class LayerCAMMethod(TopDownMethod):
    __doc__ = LayerCAM.__doc__
    Config = LayerCAMConfig
    engine = LayerCAM

    def layer_indices(self):
        n = len(self.encoder.channels)
        return list(range(max(0, n - self.config.layers), n))

    def engine_kwargs(self):
        return {"gamma": self.config.gamma}


@register_method("sscam")
class SSCAMMethod(TopDownMethod):
    __doc__ = SSCAM.__doc__
    Config = SSCAMConfig
    engine = SSCAM

    def engine_kwargs(self):
        return {"num_samples": self.config.num_samples, "sigma": self.config.sigma}


@register_method("iscam")
class ISCAMMethod(TopDownMethod):
    __doc__ = ISCAM.__doc__
    Config = ISCAMConfig
    engine = ISCAM

    def engine_kwargs(self):
        return {"num_samples": self.config.num_samples}


@register_method("ablationcam")
class AblationCAMMethod(TopDownMethod):
    __doc__ = AblationCAM.__doc__
    engine = AblationCAM

    def engine_kwargs(self):
        return {"head_fn": self._head_from_last}

    def _head_from_last(self, activation: torch.Tensor) -> torch.Tensor:
        out: MethodOutput = self.head_forward([activation])
        return out.logits
