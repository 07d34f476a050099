"""PixelCAM (Guichemerre et al., MIDL 2025, eqs. 1–3; docs/protocol.md,
"Method facts").

A seeded student (``histocam.methods.student``) whose pixel head f is a linear foreground/background
classifier (1×1 convolution d -> 2, or the 3-layer variant of App. J.1, ``head: mlp3``) on the shared
encoder's last feature map, trained jointly with the teacher's own image classifier g:
loss = H(y, g(F)) + λ · Σ_{p ∈ C⁺ ∪ C⁻} H(y'_p, f(F_p)) (eq. 3), the pixel pseudo-labels y' sampled
from the teacher's stored B-LOC map. The network starts from the teacher's B-CL checkpoint (encoder +
image head; set by the run layer) and is trained whole. The map is the softmax foreground probability.

``head_init: zero`` (our default, a deviation the paper does not describe) starts the output layer
at zero: p = ½ everywhere and a pixel loss of ln 2 per seed, so that the fresh head does not send
large random gradients into the pretrained encoder; ``default`` keeps PyTorch's initialisation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from histocam.methods.catalog import register_method
from histocam.methods.student import SeededStudent, SeededStudentConfig


class PixelCAMConfig(SeededStudentConfig):
    name: str = "pixelcam"
    head: Literal["linear", "mlp3"] = "linear"
    head_init: Literal["zero", "default"] = Field(
        "zero", description="zero: output layer starts at 0 (p = ½); default: PyTorch's init")


def pixel_head(channels: int, kind: str, init: str = "zero") -> nn.Module:
    """1×1-convolution FG/BG classifier (``linear``) or the 3-layer one (``mlp3``)."""
    if kind == "linear":
        head = nn.Conv2d(channels, 2, kernel_size=1)
        last = head
    else:
        hidden = max(channels // 2, 16)
        head = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                             nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
                             nn.Conv2d(hidden, 2, 1))
        last = head[-1]
    if init == "zero":
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return head


@register_method("pixelcam", family="seeded student", paper="Guichemerre et al., MIDL 2025",
                 summary="A linear FG/BG pixel classifier on the encoder's pixel features, trained "
                 "jointly with the image classifier from seeds sampled out of a teacher's CAMs.",
                 map="foreground probability")
class PixelCAM(SeededStudent):
    Config = PixelCAMConfig

    def build_head(self, channels, num_classes):
        return pixel_head(channels, self.config.head, self.config.head_init)
