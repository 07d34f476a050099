"""U-Net, fully supervised: the upper bound of every table of the seed papers (PixelCAM Table 1,
NEGEV Table 1, Max-Min Table 1; Ronneberger et al., MICCAI 2015).

The encoder with the U-Net decoder of ``histocam.methods.decoder`` (skips from every encoder
stage, full input resolution, two-channel FG/BG softmax), trained on the training images' pixel
masks: mean cross-entropy over every annotated pixel, plus the image loss of a GAP + linear
classifier on the last stage (so the run also classifies and B-CL selection is meaningful). The map
is the softmax foreground probability at the input size, without min–max. ``freeze_encoder``
trains the decoder and the classifier on a fixed (e.g. ImageNet) encoder. Not a WSOL method: it
sees the pixel labels that WSOL methods never do. The cheap 1×1 bound is ``supervised``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from histocam.methods.base import ClassifierConfig, MethodOutput, WSOLMethod, foreground_probability
from histocam.methods.base import image_loss as classification_loss
from histocam.methods.catalog import register_method
from histocam.methods.decoder import DECODER_WIDTHS, UNetDecoder, input_size
from histocam.methods.supervised import mask_cross_entropy


class UNetConfig(ClassifierConfig):
    name: str = "unet"
    freeze_encoder: bool = Field(False, description="train the decoder (and classifier) only")
    decoder_widths: tuple[int, ...] = Field(DECODER_WIDTHS, description="decoder block widths, "
                                            "deepest first")


@register_method("unet", family="supervised", paper="Ronneberger et al., MICCAI 2015",
                 summary="A U-Net decoder on the encoder's stages trained on the pixel masks: the "
                 "upper bound of every table.",
                 map="foreground probability")
class UNet(WSOLMethod):
    Config = UNetConfig
    probability_maps = True

    def __init__(self, config, num_classes, *, encoder=None) -> None:
        super().__init__(config, num_classes, encoder=encoder)
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)

    def build_head(self, channels, num_classes):
        return nn.ModuleDict({"classifier": nn.Linear(channels, num_classes),
                              "decoder": UNetDecoder(self.encoder.channels,
                                                     self.config.decoder_widths)})

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics
        return self

    def forward(self, images: torch.Tensor) -> MethodOutput:
        return self.head_forward(self.encoder(images), tuple(images.shape[-2:]))

    def head_forward(self, features, size: tuple[int, int] | None = None):
        size = size or input_size(features, self.encoder.reductions)
        logits = self.head["classifier"](features[-1].mean(dim=(2, 3)))
        return MethodOutput(logits, features, None,
                            {"pixel_logits": self.head["decoder"](features, size)})

    def loss(self, batch, output):
        ce = classification_loss(output.logits, batch["label"], self.config.image_loss)
        pixel = mask_cross_entropy(output.extras["pixel_logits"], batch)
        return ce + pixel, {"ce": float(ce.detach()), "pixel": float(pixel.detach())}

    def localize_view(self, images, classes, upsample: bool = True):
        output = self(images)
        return output.logits, foreground_probability(output.extras["pixel_logits"], None)

    def parameter_groups(self):
        groups = super().parameter_groups()
        if self.config.freeze_encoder:
            groups = [g for g in groups if g["role"] != "encoder"]
        return groups
