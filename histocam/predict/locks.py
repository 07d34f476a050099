"""A lock file per slide, so that processes sharing a folder of slides never predict one twice.

``SlideLock(path).acquire()`` creates ``path`` exclusively (``O_CREAT | O_EXCL``, atomic on local
and NFSv3+ file systems) and writes its owner: pid, host, start time. A lock whose owner is a dead
process of this host, or that stayed empty for a minute (its writer died between creating and
writing it), is stale and taken over; a lock of another host is trusted (its process cannot be
checked from here). ``release`` removes the lock only if it is still this process's.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

EMPTY_STALE_SECONDS = 60.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class SlideLock:
    """The lock file at ``path`` (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}
        self.held = False

    def _read(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def holder(self) -> str:
        """Who holds the lock, in words."""
        data = self._read() or {}
        return f"pid {data.get('pid', '?')} on {data.get('host', '?')} ({self.path})"

    def stale(self) -> bool:
        data = self._read()
        if data is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return False
            return age > EMPTY_STALE_SECONDS
        return data.get("host") == self.owner["host"] and \
            not process_alive(int(data.get("pid", -1)))

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when a live process does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self.stale():
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({**self.owner, "started": time.time()}, fh)
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            data = self._read() or {}
            if data.get("pid") == self.owner["pid"] and data.get("host") == self.owner["host"]:
                self.path.unlink(missing_ok=True)
            self.held = False
