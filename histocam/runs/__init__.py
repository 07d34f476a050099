"""Runs as objects: a trained run's config, checkpoints, maps and evaluations (``Run``)."""

from histocam.core.rundir import CHECKPOINTS, RunError
from histocam.runs.run import Run

__all__ = ["CHECKPOINTS", "Run", "RunError"]
