"""The method registry and the one factory: ``create_method(config, num_classes)``."""

from __future__ import annotations

from typing import Any

from histocam.methods.base import MethodConfig, WSOLMethod
from histocam.registry import Registry

METHODS: Registry[type[WSOLMethod]] = Registry("method")


def register_method(name: str):
    """Class decorator: ``@register_method("cam")``; the class's ``Config`` must name it."""

    def decorate(cls: type[WSOLMethod]) -> type[WSOLMethod]:
        cls.method_name = name
        return METHODS.register(name)(cls)

    return decorate


def method_config(value: MethodConfig | dict[str, Any] | str) -> MethodConfig:
    """Parse a method config: a name, a dict with ``name`` and hyper-parameters, or a config."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if "name" not in value:
        raise ValueError("a method config needs a 'name' (see `histocam methods`)")
    cls = METHODS.get(value["name"])
    return cls.Config.model_validate(value)


def create_method(config: MethodConfig | dict[str, Any] | str, num_classes: int) -> WSOLMethod:
    config = method_config(config)
    return METHODS.get(config.name)(config, num_classes)
