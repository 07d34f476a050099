"""WSOL methods, one per file, registered by name; ``create_method`` builds any of them."""

from histocam.methods import cam, deepmil, gap, lse, maxpool, prm, wildcat  # noqa: F401 (register)
from histocam.methods.base import MethodConfig, MethodOutput, WSOLMethod
from histocam.methods.maps import minmax_normalize, normalize_cam, upsample
from histocam.methods.registry import METHODS, create_method, method_config, register_method

__all__ = [
    "METHODS", "MethodConfig", "MethodOutput", "WSOLMethod", "create_method", "method_config",
    "minmax_normalize", "normalize_cam", "register_method", "upsample",
]
