"""Encoders (timm backbones exposing spatial feature maps)."""

from histocam.models.backbones import BackboneConfig, BackboneError, Encoder, create_encoder

__all__ = ["BackboneConfig", "BackboneError", "Encoder", "create_encoder"]
