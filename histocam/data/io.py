"""Reading images and masks from disk with conversions reported, never silent.

Images: any PIL-readable format plus TIFF via tifffile; grayscale, RGBA, palette and 16-bit images
are converted to RGB uint8 with a warning. Truncated or undecodable files raise ``DataError``.
Masks: binary (0/1, 0/255, bool) or instance maps (GlaS ``*_anno.bmp``); any value > 0 is
foreground. RGB masks are accepted only when all three channels are equal.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from histocam.data.errors import DataError

TIFF_SUFFIXES = {".tif", ".tiff"}


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a list, a manifest); anything else is a ``DataError`` naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file (byte {exc.start})") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a text file") from None


def _too_large(path: Path, exc: Exception) -> DataError:
    return DataError(path, f"declared image size exceeds {Image.MAX_IMAGE_PIXELS} pixels (PIL's "
                     f"decompression bomb limit; {exc}); read whole-slide images with the WSI reader")


def _load_array(path: Path) -> np.ndarray:
    """Decode the whole file into an array (forces full decode so truncation is detected).

    An image declaring more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL's decompression bomb
    limit, ~89 M) is refused before anything is allocated, whatever its real content.
    """
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _load_tiff(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                return np.array(im)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _too_large(path, exc) from None
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError,
            struct.error, zlib.error, ZeroDivisionError, IndexError, KeyError, TypeError) as exc:
        # a corrupt file makes a PIL decoder raise any of these (not a bug of the caller)
        raise DataError(path, f"unreadable or truncated image ({exc})") from exc


def _load_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is None:
                raise ValueError("no image in the file")
            pixels = int(np.prod(series.shape, dtype=np.float64)) // max(
                1, series.shape[-1] if len(series.shape) == 3 and series.shape[-1] in (3, 4) else 1)
            if pixels > (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise _too_large(path, ValueError(f"TIFF of shape {tuple(series.shape)}"))
            return np.asarray(series.asarray())
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt TIFF makes tifffile raise anything
        # (fuzzing found ZeroDivisionError, IndexError, KeyError, ...): it is the file's fault
        raise DataError(path, f"unreadable or truncated TIFF ({type(exc).__name__}: {exc})") from exc


def to_uint8_rgb(array: np.ndarray, path: Path | str) -> tuple[np.ndarray, list[str]]:
    """Convert any 2-D/3-D pixel array to H×W×3 uint8 RGB, returning the conversions applied."""
    warnings: list[str] = []
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first TIFF
    if a.ndim == 2:
        warnings.append("grayscale image converted to RGB")
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        warnings.append("single-channel image converted to RGB")
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        warnings.append("RGBA image: alpha channel dropped")
        a = a[:, :, :3]
    elif a.ndim != 3 or a.shape[2] != 3:
        raise DataError(path, f"unsupported image shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise DataError(path, "image has non-finite values")
            hi = 1.0 if a.max() <= 1.0 else 255.0
            warnings.append(f"{a.dtype} image scaled from [0, {hi:g}] to uint8")
            a = np.clip(np.rint(a / hi * 255), 0, 255).astype(np.uint8)
        else:
            hi = 65535 if a.max() > 255 else 255
            warnings.append(f"{a.dtype} image (max {int(a.max())}) scaled to uint8")
            a = np.clip(np.rint(a.astype(np.float64) / hi * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a), warnings


def read_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an image as H×W×3 uint8 RGB. Returns ``(image, warnings)``."""
    path = Path(path)
    return to_uint8_rgb(_load_array(path), path)


def read_mask(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary or instance mask as an H×W bool array (value > 0 = foreground).

    Raises ``DataError`` when the file is unreadable, is a colour image, or its size differs from
    ``expected_hw`` (the image's height and width).
    """
    path = Path(path)
    a = _load_array(path)
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = a[:, :, :3]
        if a.shape[2] == 1 or bool((a == a[:, :, :1]).all()):
            a = a[:, :, 0]
        else:
            raise DataError(path, "mask is a colour image (channels differ); expected a label map")
    if a.ndim != 2:
        raise DataError(path, f"mask must be 2-D, got shape {a.shape}")
    if expected_hw is not None and tuple(a.shape) != tuple(expected_hw):
        raise DataError(
            path, f"mask size {a.shape[1]}x{a.shape[0]} (W×H) does not match image size "
            f"{expected_hw[1]}x{expected_hw[0]}"
        )
    return a > 0


def read_mask_values(path: str | Path) -> np.ndarray:
    """Raw mask array, channels kept (for validation reports: binary, instance map, colour)."""
    return _load_array(Path(path))
