"""A slide's partial results, kept so that an interrupted prediction resumes where it stopped.

The folder holds ``settings.json`` (what the tiles were inferred with), ``grid.npz`` (tile positions
and tissue fractions) and ``batches/batch-FIRST-COUNT.npz``, one per inferred batch (tile indices,
class probabilities, map classes, the tiles' maps reduced to the map grid), each written under a
temporary name and renamed, so that a batch file is all there or absent. Reading the batches back in
tile order makes the result independent of where the run was interrupted. A file that cannot be
read (truncated, corrupt) is an error naming it, never a traceback.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from histocam.data.errors import DataError
from histocam.wsi.grid import TileGrid

FIELDS = ("probs", "classes", "maps")


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(path, f"unreadable partial result ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())}): delete it to infer its tiles again, or pass "
                     "--redo to start the slide again")


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` file; a DataError naming it when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in names}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        raise _unreadable(path, exc) from None


class SlideWork:
    """``folder``: the grid, its settings, and one ``.npz`` per inferred batch."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.batches = self.folder / "batches"

    def start(self, settings: dict, grid: TileGrid) -> None:
        """Create the folder, or check that an existing one was made with the same settings."""
        path = self.folder / "settings.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _unreadable(path, exc) from None
            if old != settings:
                changed = sorted(k for k in settings if not isinstance(old, dict) or
                                 old.get(k) != settings[k])
                raise DataError(self.folder, "partial results made with other settings "
                                f"({', '.join(changed)}): use the same settings to resume, or "
                                "--redo to start again")
            return
        self.batches.mkdir(parents=True, exist_ok=True)
        np.savez(self.folder / "grid.npz", positions=grid.positions, tissue=grid.tissue)
        tmp = path.with_name(".settings.json.tmp")
        tmp.write_text(json.dumps(settings, indent=1))
        tmp.replace(path)

    def files(self) -> list[Path]:
        return sorted(self.batches.glob("batch-*.npz")) if self.batches.is_dir() else []

    def done(self) -> np.ndarray:
        """The indices of the tiles already inferred."""
        found = [load_arrays(f, ("index",))["index"] for f in self.files()]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)

    def add(self, index: np.ndarray, probs: np.ndarray, classes: np.ndarray,
            maps: np.ndarray) -> None:
        """One batch, written to a temporary name and renamed (a batch is all there or absent)."""
        name = f"batch-{int(index[0]):09d}-{len(index):05d}.npz"
        tmp = self.batches / f".{name}.tmp.npz"
        np.savez(tmp, index=index, probs=probs, classes=classes, maps=maps)
        tmp.replace(self.batches / name)

    def in_tile_order(self) -> Iterator[tuple[int, np.ndarray, int, np.ndarray]]:
        """(index, probs, class, map) of every finished tile, by tile index; one batch file is
        loaded at a time when the batches do not interleave (they are written in tile order)."""
        files = self.files()
        entries = []
        for k, f in enumerate(files):
            index = load_arrays(f, ("index",))["index"]
            entries.append(np.stack([index, np.full_like(index, k), np.arange(len(index))], 1))
        if not entries:
            return
        table = np.concatenate(entries)
        table = table[np.argsort(table[:, 0], kind="stable")]
        left = np.bincount(table[:, 1], minlength=len(files))
        cache: dict[int, dict] = {}
        for index, k, row in table.tolist():
            if k not in cache:
                cache[k] = load_arrays(files[k], FIELDS)
            z = cache[k]
            yield index, z["probs"][row], int(z["classes"][row]), z["maps"][row]
            left[k] -= 1
            if left[k] == 0:
                del cache[k]
