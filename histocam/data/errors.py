"""Errors and problem reports of the data layer: every message names the file and the problem."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class DataError(Exception):
    """A sample or list file that cannot be used. ``path`` is the offending file."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)

    def __reduce__(self):
        # pickled whole (path and problem), so a DataLoader worker can hand it to the main process
        return type(self), (self.path, self.problem)


class StorageError(OSError):
    """An I/O error on a file histocam itself writes or keeps (a cache entry, an output): a fault
    of the disk or the machine, never a bad sample, so it stops the command instead of being
    skipped. Built as ``StorageError(errno, reason, filename)``."""


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding of a dataset check (or a conversion warning while reading)."""

    severity: Severity
    path: str
    message: str
    split: str | None = None

    def __str__(self) -> str:
        where = f"[{self.split}] " if self.split else ""
        return f"{self.severity.value}: {where}{self.path}: {self.message}"
