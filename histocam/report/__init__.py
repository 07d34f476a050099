"""The HTML report of runs (``histocam report``): one self-contained page per set of runs."""

from histocam.report.build import build_report

__all__ = ["build_report"]
