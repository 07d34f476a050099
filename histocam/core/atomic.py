"""Atomic files: checkpoints (plain state dicts + metadata, loaded with ``weights_only=True``) and text.

A write goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target: a crash, a full disk or an unwritable folder at any point leaves the previous file whole
(the rename is atomic on POSIX file systems) and no temporary file behind. Such a failure is an
``OSError`` naming the file and saying that the previous version is intact.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None], what: str) -> Path:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        kept = (f"the previous {path.name} is intact" if path.exists()
                else f"no {path.name} was written")
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OSError(exc.errno, f"cannot write the {what} ({reason}); {kept}",
                      str(path)) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temporary file, fsync, rename).

    Serialised in memory first: ``torch.save`` on a file turns a failed write (a full disk) into an
    opaque ``RuntimeError``; writing the bytes ourselves keeps the ``OSError`` and its reason.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return _write_atomic(Path(path), lambda fh: fh.write(buffer.getbuffer()), "checkpoint")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines kept as given) atomically, like a checkpoint."""
    data = text.encode("utf-8")
    return _write_atomic(Path(path), lambda fh: fh.write(data), "file")


def load_error_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words (torch's own message for
    pickled objects is a page long and suggests the unsafe ``weights_only=False``)."""
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load" in str(exc):
        return "it holds pickled Python objects, refused by weights-only loading"
    first = str(exc).strip().splitlines()
    return first[0][:200] if first else type(exc).__name__


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded (corrupt, not a torch file, or holding objects that
    weights-only loading refuses: a pickle that would run code) or that lacks an entry it must
    hold; the message names the file."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    needs: tuple[str, ...] = ()) -> dict[str, Any]:
    """The state dict saved at ``path`` (``weights_only``), holding at least ``needs``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load checkpoint ({load_error_reason(exc)})") from exc
    missing = [key for key in needs if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a histocam checkpoint (it has no "
                              f"{', '.join(missing)})")
    return state
