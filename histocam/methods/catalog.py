"""The method registry and the one factory: ``create_method(config, num_classes)``.

Every entry carries its metadata (``METHODS.info(name)``): ``family`` (one of ``FAMILIES``),
``paper`` (authors, venue, year), ``summary`` (one sentence) and ``map`` (what its map is).
``histocam methods`` prints them and the tests sweep the methods per family.
"""

from __future__ import annotations

from typing import Any

from histocam.core.registry import Registry
from histocam.methods.base import MethodConfig, WSOLMethod
from histocam.models.backbones import Encoder

METHODS: Registry[type[WSOLMethod]] = Registry("method")
FAMILIES = ("pooling", "erasing", "transformer", "top-down", "seeded student", "masking",
            "supervised")


def register_method(name: str, *, family: str, paper: str, summary: str, map: str):
    """Class decorator: ``@register_method("cam", family=..., paper=..., summary=..., map=...)``."""
    if family not in FAMILIES:
        raise ValueError(f"method {name!r}: family {family!r} is not one of {FAMILIES}")
    if not summary.endswith(".") or "\n" in summary:
        raise ValueError(f"method {name!r}: the summary is one sentence ending with a full stop")

    def decorate(cls: type[WSOLMethod]) -> type[WSOLMethod]:
        cls.method_name = name
        return METHODS.register(name, family=family, paper=paper, summary=summary, map=map)(cls)

    return decorate


def method_config(value: MethodConfig | dict[str, Any] | str) -> MethodConfig:
    """A method config from a name or a dict with ``name`` and hyper-parameters (validated by the
    registered method's ``Config``); a config is returned as it is (validated when it was built)."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise ValueError("a method config needs a 'name' (see `histocam methods`)")
    cls = METHODS.get(value["name"])
    return cls.Config.model_validate(value)


def create_method(config: MethodConfig | dict[str, Any] | str, num_classes: int,
                  encoder: Encoder | None = None) -> WSOLMethod:
    """Build a method; ``encoder``: share this encoder instead of building one (a method composed
    around a classifier, e.g. a top-down CAM or a seeded student)."""
    config = method_config(config)
    return METHODS.get(config.name)(config, num_classes, encoder=encoder)
