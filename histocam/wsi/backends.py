"""Slide file libraries behind one interface: OpenSlide and tiffslide.

A ``SlideBackend`` gives what the reader needs of a slide: its level geometry, its properties and
``region(x, y, level, width, height)``, an RGB uint8 array read from one level. ``OpenSlideBackend``
uses OpenSlide (the ``openslide-bin`` wheel ships the library, no system package);
``TiffSlideBackend`` uses tiffslide (pure Python, tifffile + imagecodecs). OpenSlide's transparent
pixels (outside the scanned area) are composited on white, so both give the same RGB pixels.

Every call into a library goes through ``SlideBackend._call``: whatever the library raises on a bad
file (OpenSlide's errors, tifffile and imagecodecs decode errors, an ``IndexError`` on a truncated
file) becomes one ``SlideError`` naming the file and what was being read. Our own arguments are
checked before the call, so an exception inside the library is a property of the file.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from histocam.data.errors import DataError

T = TypeVar("T")


class SlideError(DataError):
    """A slide file that cannot be opened or read (missing, truncated, corrupt, unsupported):
    ``what`` failed, and ``detail`` says how (the library and its message)."""

    def __init__(self, path: str | Path, what: str, detail: str = "") -> None:
        self.what, self.detail = what, detail
        super().__init__(path, f"{what} ({detail})" if detail else what)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SlideBackend(abc.ABC):
    """One opened slide file (module docstring)."""

    name: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._slide = self._call("cannot open the slide", self._open)
        self.dimensions, self.level_dimensions, self.level_downsamples, self.properties = \
            self._call("cannot read the slide's levels", self._geometry)
        if not self.level_dimensions or min(min(d) for d in self.level_dimensions) < 1:
            raise SlideError(self.path, "cannot read the slide", f"{self.name}: no image level")

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # each library has its own error types (module docstring)
            raise SlideError(self.path, what, f"{self.name}: {_short(exc)}") from None

    @abc.abstractmethod
    def _open(self) -> Any:
        """The library's slide object."""

    def _geometry(self) -> tuple:
        s = self._slide
        return (tuple(int(v) for v in s.dimensions),
                [tuple(int(v) for v in d) for d in s.level_dimensions],
                [float(d) for d in s.level_downsamples], dict(s.properties))

    def region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """height×width×3 uint8 RGB at ``level``; (x, y) level-0 pixels; the region must lie
        inside the level."""
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        if width < 1 or height < 1 or x < 0 or y < 0 or \
                x / ds + width > lw + 1 or y / ds + height > lh + 1:
            raise ValueError(f"region ({x}, {y}) {width}×{height} at level {level} is outside "
                             f"{self.path.name}'s level ({lw}×{lh})")
        a = self._call(f"cannot read a region at ({x}, {y}) level {level}", self._read,
                       (int(x), int(y)), level, (int(width), int(height)))
        if a.ndim != 3 or a.shape[:2] != (height, width):
            raise SlideError(self.path, f"cannot read a region at ({x}, {y}) level {level}",
                             f"{self.name}: it came back with shape {a.shape}")
        if a.shape[2] == 4:
            if bool((a[..., 3] < 255).any()):  # transparent: composite on white (not premultiplied)
                alpha = a[..., 3:4].astype(np.uint32)
                return ((a[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
            return np.ascontiguousarray(a[..., :3])
        return a

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, level, size))

    def close(self) -> None:
        self._call("cannot close the slide", self._slide.close)


class OpenSlideBackend(SlideBackend):
    name = "openslide"

    def _open(self) -> Any:
        import openslide

        return openslide.OpenSlide(str(self.path))


class TiffSlideBackend(SlideBackend):
    name = "tiffslide"

    def _open(self) -> Any:
        import tiffslide

        return tiffslide.TiffSlide(str(self.path))

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        with quiet_logger("tifffile"):  # a bad file's messages: its failure says it in one line
            try:
                return super()._call(what, fn, *args)
            except SlideError:
                _drain_zarr()
                raise


@contextlib.contextmanager
def quiet_logger(logger_name: str):
    """A library's logger silenced for the duration: what it logs about a bad file would print
    lines besides the one error that names the file."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _drain_zarr() -> None:
    """Let zarr's I/O loop finish the chunk reads of a failed region. tiffslide decodes a region's
    tiles as concurrent tasks on zarr's loop; when one fails the others stay pending, and if the
    process then exits they are destroyed with "Task was destroyed" messages and tracebacks."""
    import asyncio

    from zarr.core import sync

    async def drain() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)

    if sync.loop[0] is not None and sync.loop[0].is_running():
        sync.sync(drain())


BACKENDS: dict[str, type[SlideBackend]] = {"openslide": OpenSlideBackend,
                                           "tiffslide": TiffSlideBackend}
BACKEND_CHOICES = ("auto", *BACKENDS)


def open_backend(path: Path, backend: str = "auto") -> SlideBackend:
    """The slide opened with ``backend``; ``auto`` tries OpenSlide, then tiffslide (when OpenSlide
    is not installed or cannot open the file). A SlideError says why each one failed."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"--backend {backend!r}: one of {', '.join(BACKEND_CHOICES)}")
    path = Path(path)
    if not path.is_file():
        raise SlideError(path, "file not found")
    problems = []
    for name in (BACKENDS if backend == "auto" else (backend,)):
        try:
            return BACKENDS[name](path)
        except ImportError:
            problems.append(f"{name} is not installed (pip install 'histocam[wsi]')")
        except SlideError as exc:
            problems.append(exc.detail if exc.what == "cannot open the slide" else exc.problem)
    raise SlideError(path, "cannot open the slide", "; ".join(problems))
