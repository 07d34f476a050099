"""Methods composed around a classifier (docs/design.md: methods as small files on extension
points).

A top-down CAM interrogates a trained image classifier; a seeded student adds a pixel head to one.
Both own the classifier whole (``self.classifier``: any registered classifier method, e.g. CAM's
GAP head or WILDCAT's top-k pooling) instead of subclassing it, so any classifier can be paired
with any map: GradCAM++ on a WILDCAT classifier is ``{name: gradcampp, classifier: wildcat}``.
"""

from __future__ import annotations

import torch
from pydantic import Field, SerializeAsAny, field_serializer, field_validator

from histocam.methods.base import MethodConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import METHODS, create_method, method_config
from histocam.models.backbones import BackboneConfig, Encoder


class ComposedConfig(MethodConfig):
    """A method around a classifier: ``classifier`` is any registered classifier method's config
    (its ``backbone`` is this method's ``backbone``: set that one)."""

    classifier: SerializeAsAny[MethodConfig] = Field(
        default_factory=lambda: _default_classifier(), description="the image classifier's method")

    @field_validator("classifier", mode="before")
    @classmethod
    def _parse_classifier(cls, value):
        config = method_config(value)
        if config.backbone != BackboneConfig():  # the composed method's backbone is the one used
            raise ValueError("set the backbone as method.backbone, not method.classifier.backbone")
        if config.map_tta != "none":  # the composed method makes the map
            raise ValueError("set the test-time views as method.map_tta, not "
                             "method.classifier.map_tta")
        if config.map_scales != (1.0,):
            raise ValueError("set the input scales as method.map_scales, not "
                             "method.classifier.map_scales")
        return check_classifier(config)

    def around(self, classifier: MethodConfig, backbone: BackboneConfig) -> ComposedConfig:
        """This method with ``classifier`` (another run's method: its own backbone, test-time
        views and input scales are dropped, this method's are used) on ``backbone``. The
        classifier is checked as the field's validator checks it; the rest of this config is
        validated already."""
        inner = classifier.model_copy(update={"backbone": BackboneConfig(), "map_tta": "none",
                                              "map_scales": (1.0,)})
        return self.model_copy(update={"classifier": check_classifier(inner),
                                       "backbone": backbone})

    @field_serializer("classifier")
    def _classifier_without_backbone(self, value: MethodConfig, info) -> dict:
        """Saved configs show the classifier without a backbone, test-time views or input scales:
        the method's are the ones used."""
        return value.model_dump(mode=info.mode, exclude={"backbone", "map_tta", "map_scales"})


def _default_classifier() -> MethodConfig:
    return method_config("cam")


def check_classifier(config: MethodConfig) -> MethodConfig:
    """``config`` when its method can be the classifier of a composed method: a registered
    classifier method whose class comes from a head on the encoder's features."""
    cls = METHODS.get(config.name)
    if issubclass(cls, ComposedMethod):
        raise ValueError(f"the classifier must be a classifier method, not {config.name!r}")
    if not cls.composable:
        raise ValueError(f"{config.name!r} cannot be the classifier of another method (its "
                         "class does not come from a head on the encoder's features)")
    return config


class ComposedMethod(WSOLMethod):
    """Owns ``self.classifier`` (a registered classifier method, built from
    ``config.classifier`` with this method's backbone) and shares its encoder. The encoder is one
    module reached by two names, so the state dict lists it under ``encoder.`` and
    ``classifier.encoder.`` (stored once by ``torch.save``: the tensors are shared)."""

    Config = ComposedConfig

    def __init__(self, config: ComposedConfig, num_classes: int, *,
                 encoder: Encoder | None = None) -> None:
        classifier_config = config.classifier.model_copy(update={"backbone": config.backbone})
        classifier = create_method(classifier_config, num_classes, encoder=encoder)
        super().__init__(config, num_classes, encoder=classifier.encoder)
        self.classifier = classifier

    def classifier_forward(self, features: list[torch.Tensor]) -> MethodOutput:
        return self.classifier.head_forward(features)

    def load_initial_state(self, state: dict[str, torch.Tensor]) -> None:
        """Weights of this method, or of a run whose classifier is this one's: a classifier run
        (``encoder.``, ``head.``) or another composed method's run (its ``classifier.`` part)."""
        if set(state) == set(self.state_dict()):
            self.load_state_dict(state)
            return
        inner = {k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")}
        self.classifier.load_state_dict(inner or state)
