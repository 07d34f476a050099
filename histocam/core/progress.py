"""One progress display for every long command: stage lines, bars with the time left, log lines.

A command says what it is doing through four calls, and this module decides how it shows:

- ``Stages(n).next(text)``: one line per stage of a pipeline, ``[2/4] exporting teacher maps``;
- ``task(description, total)`` (a context manager with ``advance``) and ``track(iterable, ...)``:
  a unit of work of known size (the batches of an epoch, the images of an evaluation);
- ``message(text)``: a line worth keeping between the bars (an epoch's validation scores).

How it shows (``configure``, called once by each command of the command line):

- ``bars``, when stderr is a terminal: stage lines, and a live bar per running task with its count,
  elapsed time and time left; a finished bar disappears, its summary line (if any) stays;
- ``lines``, when stderr is not a terminal (a log file, a pipe, a batch job): the same stage lines
  and messages, and for a running task one line every ``INTERVAL`` seconds (count, elapsed, time
  left) plus one when it ends, so that a log shows a long task moving without a line per batch;
- ``quiet`` (``--quiet``): nothing; the command prints only its results and errors.

Everything goes to stderr, so stdout holds only results (tables, ``--json`` lines). Under torchrun
only rank 0 (``RANK``) reports. Listeners (``listen``) receive every event in every mode: tests
and Python callers that draw their own display.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")
Mode = Literal["auto", "bars", "lines", "quiet"]

#: Seconds between two log lines of one running task when stderr is not a terminal.
INTERVAL = 30.0


@dataclass(frozen=True)
class Event:
    """What listeners receive: ``kind`` is stage, start, advance, end or message."""

    kind: str
    text: str
    completed: int = 0
    total: int | None = None


_mode: Mode = "auto"
_listeners: list[Callable[[Event], None]] = []


def configure(quiet: bool = False, mode: Mode | None = None) -> None:
    """Choose the display for this process: ``quiet``, or ``mode`` (``auto``: bars on a
    terminal, log lines otherwise)."""
    global _mode
    _mode = "quiet" if quiet else (mode or "auto")


def current_mode() -> Mode:
    """The display in effect: bars, lines or quiet (``auto`` resolved against stderr)."""
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 speaks for the job
        return "quiet"
    if _mode != "auto":
        return _mode
    return "bars" if sys.stderr.isatty() else "lines"


@contextmanager
def listen(callback: Callable[[Event], None]) -> Iterator[None]:
    """Send every event to ``callback`` while the block runs."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def _emit(event: Event) -> None:
    for callback in list(_listeners):
        callback(event)


def duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# ---------------------------------------------------------------------- the terminal display
class _Bars:
    """One rich live display shared by the tasks running at a time (an epoch and its validation
    pass show together); it stops, leaving no trace, when the last task ends."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.progress = None
        self.running = 0

    def start(self, description: str, total: int | None, completed: int) -> int:
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"),
                TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
        self.running += 1
        task_id = self.progress.add_task(description, total=total, completed=completed)
        self.progress.refresh()  # drawn at least once, however short the task
        return task_id

    def advance(self, task_id: int, n: int) -> None:
        self.progress.advance(task_id, n)

    def end(self, task_id: int) -> None:
        self.progress.remove_task(task_id)
        self.running -= 1
        if self.running == 0:
            self.progress.stop()
            self.progress = None

    def line(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text, markup=False)


_bars: _Bars | None = None


def _terminal() -> _Bars:
    global _bars
    if _bars is None:
        _bars = _Bars()
    return _bars


def _line(text: str) -> None:
    """One line of progress in the current mode (none when quiet)."""
    mode = current_mode()
    if mode == "bars":
        _terminal().line(text)
    elif mode == "lines":
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- what commands call
def message(text: str) -> None:
    """A line to keep (shown above the bars; a log line otherwise; nothing when quiet)."""
    _emit(Event("message", text))
    _line(text)


class Stages:
    """The numbered stages of a pipeline: ``next(text)`` shows ``[i/n] text``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def next(self, text: str) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {text}"
        _emit(Event("stage", line, self.done, self.total))
        _line(line)


class Task:
    """A running unit of work of ``total`` steps (``None``: unknown)."""

    def __init__(self, description: str, total: int | None, completed: int = 0,
                 unit: str = "") -> None:
        self.description, self.total, self.completed = description, total, completed
        self.unit = f" {unit}" if unit else ""
        self.mode = current_mode()
        self.began = time.monotonic()
        self.last_line = self.began
        self.lines = 0
        self._id = None
        if self.mode == "bars":
            self._id = _terminal().start(description, total, completed)
        _emit(Event("start", description, completed, total))

    def _status(self) -> str:
        elapsed = time.monotonic() - self.began
        count = f"{self.completed}/{self.total}" if self.total is not None else str(self.completed)
        text = f"{self.description}: {count}{self.unit}, {duration(elapsed)} elapsed"
        if self.total and 0 < self.completed < self.total:
            left = elapsed / self.completed * (self.total - self.completed)
            text += f", about {duration(left)} left"
        return text

    def advance(self, n: int = 1) -> None:
        self.completed += n
        _emit(Event("advance", self.description, self.completed, self.total))
        if self.mode == "bars":
            _terminal().advance(self._id, n)
        elif self.mode == "lines" and time.monotonic() - self.last_line >= INTERVAL:
            self.last_line = time.monotonic()
            self.lines += 1
            print(self._status(), file=sys.stderr, flush=True)

    def end(self) -> None:
        _emit(Event("end", self.description, self.completed, self.total))
        if self.mode == "bars":
            _terminal().end(self._id)
        elif self.mode == "lines" and self.lines:  # a task that logged while running closes its story
            print(f"{self._status()} (done)", file=sys.stderr, flush=True)


class _Unshown:
    """The task of a caller that asked for no progress (``task(None, ...)``)."""

    def advance(self, n: int = 1) -> None:
        pass


@contextmanager
def task(description: str | None, total: int | None, completed: int = 0,
         unit: str = "") -> Iterator[Task | _Unshown]:
    """A task shown while the block runs: ``with task("epoch 3", 75) as t: ... t.advance()``;
    ``description=None`` shows nothing (for callers whose progress is optional)."""
    if description is None:
        yield _Unshown()
        return
    running = Task(description, total, completed, unit)
    try:
        yield running
    finally:
        running.end()


def track(items: Iterable[T], description: str, total: int | None = None,
          unit: str = "") -> Iterator[T]:
    """``items`` one by one, each counted as a step of a task (``total``: default ``len``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total, unit=unit) as running:
        for item in items:
            yield item
            running.advance()
