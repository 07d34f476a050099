"""PixelCAM (Guichemerre et al., MIDL 2025, eqs. 1–3; PROTOCOL.md "PixelCAM").

A linear foreground/background pixel classifier f (1×1 convolution d -> 2, or the 3-layer variant of
App. J.1) on the shared encoder's last feature map, trained jointly with the teacher's own image
classifier g: loss = CE(y, g(F)) + λ · Σ_{p ∈ C⁺ ∪ C⁻} CE(y'_p, f(F_p)), the pixel pseudo labels y'
sampled from the teacher's stored B-LOC CAM (``histocam.methods.sampling``, redrawn every step).
Pixel logits are upsampled (bilinear) to the CAM's size for the loss, or the CAM is downsampled to
the feature grid (``loss_resolution: low``). The network starts from the teacher's B-CL checkpoint
(encoder + image head; pixel head from scratch) and is trained whole. The map is the softmax
foreground probability, bilinear to the input, without min–max.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, SerializeAsAny, field_validator
from torch import nn

from histocam.cams.normalize import upsample as upsample_maps
from histocam.methods.base import MethodConfig, MethodOutput, WSOLMethod, image_loss
from histocam.methods.registry import method_config, register_method
from histocam.methods.sampling import IGNORE, sample_pseudo_labels


class PixelCAMConfig(MethodConfig):
    name: str = "pixelcam"
    teacher: SerializeAsAny[MethodConfig] = Field(default_factory=lambda: method_config("cam"),
                                                  description="the teacher's method config")
    n: int = Field(5, ge=0, description="seeds per region per image and step")
    lam: float = Field(1.0, ge=0, description="weight λ of the pixel loss")
    sampler: Literal["pb", "th", "static"] = "pb"
    head: Literal["linear", "mlp3"] = "linear"
    loss_resolution: Literal["full", "low"] = "full"
    negative_class: int | None = Field(None, description="class of fully negative images")
    negative_all_background: bool = False
    cams: Path | None = Field(None, description="CAM store (.npz) of the teacher on train")
    init_checkpoint: Path | None = Field(None, description="teacher checkpoint to start from "
                                         "(B-CL); none = the backbone's own initialisation")

    def for_inference(self) -> PixelCAMConfig:
        return super().for_inference().model_copy(update={"init_checkpoint": None, "cams": None})

    @field_validator("teacher", mode="before")
    @classmethod
    def _parse_teacher(cls, value):
        teacher = method_config(value)
        if teacher.name == "pixelcam":
            raise ValueError("a PixelCAM teacher cannot itself be PixelCAM")
        return teacher


def pixel_head(channels: int, kind: str) -> nn.Module:
    """1×1-conv FG/BG classifier; its output layer starts at zero (p = ½ everywhere, pixel CE = ln 2)
    so that the fresh head does not send large random gradients into the pretrained encoder."""
    if kind == "linear":
        head = nn.Conv2d(channels, 2, kernel_size=1)
        last = head
    else:
        hidden = max(channels // 2, 16)
        head = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                             nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
                             nn.Conv2d(hidden, 2, 1))
        last = head[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return head


@register_method("pixelcam")
class PixelCAM(WSOLMethod):
    Config = PixelCAMConfig

    def __init__(self, config: PixelCAMConfig, num_classes: int) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.num_classes = num_classes
        from histocam.methods.registry import create_method

        # the backbone comes from the PixelCAM config (its weights from the teacher checkpoint)
        teacher_cfg = config.teacher.model_copy(update={"backbone": config.backbone})
        self.teacher = create_method(teacher_cfg, num_classes)
        self.encoder = self.teacher.encoder
        self.pixel_head = pixel_head(self.encoder.out_channels, config.head)
        if config.init_checkpoint is not None:
            from histocam.train.checkpoint import load_checkpoint

            self.teacher.load_state_dict(load_checkpoint(config.init_checkpoint)["model"])

    def training_maps(self, data_config):
        from histocam.cams.store import load_cams
        from histocam.data.open import open_source

        if self.config.cams is None:
            raise ValueError("PixelCAM needs the teacher's stored CAMs: set method.cams to the "
                             "store written by `histocam cams TEACHER_RUN`")
        ids = open_source(data_config).dataset("train").ids
        return load_cams(self.config.cams, data_config, "train", ids)

    def build_head(self, channels, num_classes):  # the image head is the teacher's
        return self.teacher.head

    def head_forward(self, features):
        out = self.teacher.head_forward(features)
        out.extras["pixel_logits"] = self.pixel_head(features[-1])
        return out

    def forward(self, images: torch.Tensor) -> MethodOutput:
        return self.head_forward(self.encoder(images))

    def state_dict(self, *args, **kwargs):
        # the encoder is shared with the teacher: store it once, under "teacher."
        state = super().state_dict(*args, **kwargs)
        return type(state)((k, v) for k, v in state.items() if not k.startswith("encoder."))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {f"encoder.{k[len('teacher.encoder.'):]}": v for k, v in state_dict.items()
               if k.startswith("teacher.encoder.")}
        return super().load_state_dict({**state_dict, **own}, strict=strict, assign=assign)

    def pseudo_labels(self, batch: dict, size: tuple[int, int]) -> torch.Tensor:
        cams = batch["cam"].float()
        if tuple(cams.shape[-2:]) != tuple(size):
            cams = F.interpolate(cams[:, None], size=size, mode="bilinear",
                                 align_corners=False)[:, 0]
        negative = None
        if self.config.negative_class is not None:
            negative = batch["label"] == self.config.negative_class
        return sample_pseudo_labels(cams, self.config.n, self.config.sampler, negative=negative,
                                    negative_all_background=self.config.negative_all_background)

    def loss(self, batch, output):
        ce = image_loss(output.logits, batch["label"], self.config.image_loss)
        logits = output.extras["pixel_logits"]
        if "cam" not in batch:
            raise KeyError("PixelCAM trains from stored teacher CAMs: the batch has no 'cam' "
                           "(train it with `histocam pixelcam` or `histocam pipeline pixelcam`)")
        if self.config.loss_resolution == "full":
            size = tuple(batch["cam"].shape[-2:])
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        labels = self.pseudo_labels(batch, tuple(logits.shape[-2:]))
        if bool((labels != IGNORE).any()):
            pixel = F.cross_entropy(logits, labels, ignore_index=IGNORE)
        else:
            pixel = logits.sum() * 0.0
        total = ce + self.config.lam * pixel
        return total, {"ce": float(ce.detach()), "pixel": float(pixel.detach())}

    def localize_with_logits(self, images, classes, upsample: bool = True):
        output = self(images)
        prob = torch.softmax(output.extras["pixel_logits"].float(), dim=1)[:, 1]
        maps = upsample_maps(prob, tuple(images.shape[-2:])) if upsample else prob
        return output.logits, maps

    def parameter_groups(self):
        head = list(self.teacher.head.parameters()) + list(self.pixel_head.parameters())
        return [{"params": list(self.encoder.parameters()), "role": "encoder"},
                {"params": head, "role": "head"}]
