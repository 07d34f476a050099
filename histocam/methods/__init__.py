"""WSOL methods, one per file, registered by name; ``create_method`` builds any of them."""

from histocam.methods import (  # noqa: F401 (registers the methods)
    acol,
    adl,
    cam,
    cutmix,
    deepmil,
    gap,
    has,
    lse,
    maxmin,
    maxpool,
    negev,
    pixelcam,
    prm,
    sat,
    spg,
    supervised,
    topdown,
    tscam,
    unet,
    wildcat,
)
from histocam.methods.base import ClassifierConfig, MethodConfig, MethodOutput, WSOLMethod
from histocam.methods.catalog import (
    FAMILIES,
    METHODS,
    create_method,
    method_config,
    register_method,
)
from histocam.methods.composed import ComposedConfig, ComposedMethod
from histocam.methods.student import SeededStudent, SeededStudentConfig

__all__ = [
    "FAMILIES", "METHODS", "ClassifierConfig", "ComposedConfig", "ComposedMethod", "MethodConfig",
    "MethodOutput", "SeededStudent", "SeededStudentConfig", "WSOLMethod", "create_method",
    "method_config", "register_method",
]
