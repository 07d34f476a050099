"""WSOL methods, one per file, registered by name; ``create_method`` builds any of them."""

from histocam.methods import (  # noqa: F401 (registers the methods)
    cam,
    deepmil,
    gap,
    lse,
    maxpool,
    pixelcam,
    prm,
    supervised,
    topdown,
    wildcat,
)
from histocam.methods.base import MethodConfig, MethodOutput, WSOLMethod
from histocam.methods.registry import METHODS, create_method, method_config, register_method

__all__ = [
    "METHODS", "MethodConfig", "MethodOutput", "WSOLMethod", "create_method", "method_config",
    "register_method",
]
