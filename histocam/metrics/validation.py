"""Boundary checks for maps entering the metrics (docs/protocol.md, "Maps"): errors, never silent
fixes."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class MapError(ValueError):
    """A localisation map that is not finite, not in [0, 1], or of the wrong shape."""


def _name(ids: Sequence[str] | None, i: int) -> str:
    return repr(ids[i]) if ids is not None else f"#{i} of the batch"


def validate_maps(maps: torch.Tensor, masks: torch.Tensor | None = None,
                  ids: Sequence[str] | None = None) -> None:
    """Raise ``MapError`` naming the first bad image: maps must be B×H×W float in [0, 1]."""
    if maps.ndim != 3:
        raise MapError(f"maps must be B×H×W, got shape {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise MapError(f"maps must be floating point, got {maps.dtype}")
    if masks is not None and masks.shape != maps.shape:
        raise MapError(f"map shape {tuple(maps.shape)} != mask shape {tuple(masks.shape)}")
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)  # NaN propagates; ±inf shows as min/max
    finite = torch.isfinite(low) & torch.isfinite(high)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise MapError(f"map of image {_name(ids, i)} has non-finite values (NaN or inf)")
    bad = (low < 0) | (high > 1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise MapError(f"map of image {_name(ids, i)} is outside [0, 1] "
                       f"(min {float(low[i]):.6g}, max {float(high[i]):.6g})")


def validate_ignore(ignore: torch.Tensor | None, maps: torch.Tensor) -> torch.Tensor | None:
    """``ignore`` as a bool tensor (True = pixel excluded from the metric), or None; it must have
    the maps' B×H×W shape and be bool or {0, 1}."""
    if ignore is None:
        return None
    if ignore.shape != maps.shape:
        raise MapError(f"ignore mask shape {tuple(ignore.shape)} != map shape {tuple(maps.shape)}")
    if ignore.dtype == torch.bool:
        return ignore
    if ignore.is_floating_point() or ignore.is_complex() or bool(((ignore != 0) & (ignore != 1)).any()):
        raise MapError(f"ignore mask must be bool or {{0, 1}} integers, got {ignore.dtype}")
    return ignore != 0
