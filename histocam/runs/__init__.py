"""Runs as objects: a trained run's config, checkpoints, maps and evaluations (``Run``)."""

from histocam.runs.run import CHECKPOINTS, Run, RunError

__all__ = ["CHECKPOINTS", "Run", "RunError"]
