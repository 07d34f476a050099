"""histocam: weakly-supervised classification and ROI localization in histology images.

The package is laid out in layers (docs/ARCHITECTURE.md): ``core`` -> ``data`` -> ``wsi`` ->
``models`` -> ``metrics`` -> ``maps`` -> ``methods`` -> ``train`` -> ``runs`` -> ``predict`` ->
``report`` -> ``experiments`` -> ``cli``; each imports only from its own layer or lower ones
(checked by tests/test_architecture.py).

The public names below are imported on first use (PEP 562), so that ``import histocam`` and the
command line start without importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "EvaluationResult": "histocam.core.results", "RunDir": "histocam.core.rundir",
    "DataConfig": "histocam.data", "Sample": "histocam.data", "open_dataset": "histocam.data",
    "open_source": "histocam.data", "METHODS": "histocam.methods",
    "create_method": "histocam.methods", "PxAP": "histocam.metrics", "Run": "histocam.runs",
}
__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'histocam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
