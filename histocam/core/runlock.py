"""An exclusive lock on a run directory: one process at a time writes into a run.

The lock is the file ``RUN/.lock`` (``RunLock``; ``histocam predict`` takes the same kind of lock,
``STEM.lock``, on each slide it predicts, with ``acquire``/``release``) holding its owner: pid,
host, start time, what it does and a random token. It is created atomically and whole: the owner
is written to a temporary file that is then hard-linked to the lock's name (``os.link`` fails
when the name exists), so exactly one process creates it and nobody ever reads it half-written.

A process that finds the lock taken:

- held by a live process (same host): ``RunLockError`` naming the holder;
- left by a process that is gone (same host; its pid does not exist, or belongs to a process
  started after the lock): the lock is taken over, with a one-line warning. Breaking it needs the
  file ``.lock.break-TOKEN`` (created exclusively, so one process breaks a given stale lock), and
  it is removed only if it still holds that token, so two processes that found the same stale
  lock cannot both take it;
- held from another host: never broken (this host cannot see that host's processes); the error
  says which file to delete once nothing runs there.

The lock is re-entrant within a process (a command that evaluates inside an experiment takes it
twice) and released when the outermost holder leaves, on errors and on ``KeyboardInterrupt`` too.
A process killed outright (SIGKILL, SIGTERM, a crash) leaves its lock behind; the next process on
the same host finds its pid gone and takes it over.

Under torchrun rank 0 alone takes the lock and broadcasts its decision: every rank proceeds, or
every rank raises the same ``RunLockError``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from histocam.core import collectives
from histocam.core.launch import launch

log = logging.getLogger("histocam")

#: How often a process retries when the lock changes hands under it (a stale lock broken by
#: another process at the same moment); a few tries settle any such race.
ATTEMPTS = 20


class RunLockError(RuntimeError):
    """The run directory is locked by another process (or its lock cannot be read)."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run's lock."""

    pid: int
    host: str
    since: float  # time.time() when the lock was taken
    operation: str  # what the holder does: training, evaluation, ...
    token: str

    @classmethod
    def me(cls, operation: str) -> LockOwner:
        return cls(os.getpid(), socket.gethostname(), time.time(), operation, uuid.uuid4().hex)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.operation} by pid {self.pid} on host {self.host} since {since}"


# lock file (resolved) -> [owner, depth]: the locks this process holds
_HELD: dict[Path, list] = {}


class RunLock:
    """``with RunLock(path, operation):`` holds the lock file ``path`` (see the module)."""

    def __init__(self, path: str | Path, operation: str) -> None:
        self.path = Path(path)
        self.operation = operation
        self._mine = False

    def __enter__(self) -> RunLock:
        job = launch()
        if job.world > 1 and not collectives.distributed_ready():
            raise RuntimeError("a run lock under torchrun needs the job's process group "
                               "(collectives.setup) first: rank 0 takes it for every rank")
        error: Exception | None = None
        if collectives.is_main():
            try:
                acquire(self.path, self.operation)
                self._mine = True
            except (RunLockError, OSError) as exc:
                error = exc
        error = collectives.from_main(error)  # the other ranks wait for rank 0's decision
        if error is not None:
            raise error
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._mine:
            self._mine = False
            release(self.path)


def acquire(path: Path, operation: str) -> LockOwner:
    """Take the lock file ``path`` for this process (again, if it holds it already)."""
    key = path.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return _HELD[key][0]
    me = LockOwner.me(operation)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = path.parent
    stale: LockOwner | None = None  # the dead owner whose lock this process broke
    for _ in range(ATTEMPTS):
        if _create(path, me):
            _HELD[key] = [me, 1]
            if stale is not None:
                log.warning("%s: took over the lock left by %s (that process is gone)", run,
                            stale.describe())
            return me
        holder = _read(path)
        if holder is None:  # released between our two looks
            continue
        if holder.host != me.host:
            raise RunLockError(
                f"{run} is locked: {holder.describe()}; histocam cannot see that host's processes:"
                f" once nothing runs on this run there, delete {path} and try again")
        if _alive(holder):
            raise RunLockError(
                f"{run} is in use: {holder.describe()}; wait for it to finish or stop it (kill "
                f"{holder.pid}), or write to another run")
        if _break(path, holder):
            stale = holder
        else:  # another process is breaking the same stale lock at this moment
            time.sleep(0.05)
    raise RunLockError(f"{run}: cannot take its lock {path}, which keeps changing hands; if no "
                       f"histocam process uses this run, delete {path} and any "
                       f"{path.name}.break-* beside it")


def release(path: Path) -> None:
    """Leave the lock taken by ``acquire``; the file is removed when the outermost holder
    leaves, and only if it is still this process's (its token)."""
    key = path.resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    current = _read_or_none(path)
    if current is not None and current.token == held[0].token:
        path.unlink(missing_ok=True)
    else:
        log.warning("%s: the run's lock was removed or taken by another process while this one "
                    "held it", path.parent)


def holder(path: str | Path) -> LockOwner | None:
    """Who holds the lock file ``path`` (None when free or unreadable)."""
    return _read_or_none(Path(path))


# ---------------------------------------------------------------------------- internals
def _create(path: Path, owner: LockOwner) -> bool:
    """Create the lock file holding ``owner``, whole; False when it exists."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}-")
        try:
            os.write(fd, json.dumps(asdict(owner)).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:  # a full disk, a read-only folder, a file system without hard links
        raise OSError(exc.errno, f"cannot create the run's lock ({exc.strerror or exc})",
                      str(path)) from exc
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _read(path: Path) -> LockOwner | None:
    """The owner written in the lock file; None when it does not exist; RunLockError when it
    cannot be read (the lock is never broken then)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunLockError(f"{path}: cannot read the run's lock ({exc.strerror or exc})") from None
    try:
        fields = json.loads(text)
        return LockOwner(int(fields["pid"]), str(fields["host"]), float(fields["since"]),
                         str(fields["operation"]), str(fields["token"]))
    except (ValueError, KeyError, TypeError):
        raise RunLockError(f"{path}: the run's lock file is not one histocam wrote; if no "
                           f"histocam process uses {path.parent}, delete {path}") from None


def _read_or_none(path: Path) -> LockOwner | None:
    try:
        return _read(path)
    except RunLockError:
        return None


def _alive(owner: LockOwner) -> bool:
    """The lock's owner (on this host) still runs: its pid exists and that process started
    before the lock was taken (not a later process given the same pid)."""
    if owner.pid == os.getpid():  # not held by this process (see _HELD): an earlier one's
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    started = _process_start(owner.pid)
    return started is None or started <= owner.since + 2.0  # /proc's boot time is in seconds


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where there is
    no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; starttime is field 22
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _break(path: Path, stale: LockOwner) -> bool:
    """Remove the stale lock ``stale`` if it is still there; False when another process is
    breaking it at this moment."""
    breaker = path.with_name(f"{path.name}.break-{stale.token}")
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    try:
        current = _read_or_none(path)
        if current is not None and current.token == stale.token:
            path.unlink()
        return True
    finally:
        breaker.unlink()
