"""histocam: weakly-supervised classification and ROI localization in histology images.

The package is laid out in layers (docs/ARCHITECTURE.md): ``core`` -> ``data`` -> ``wsi`` ->
``models`` -> ``metrics`` -> ``maps`` -> ``methods`` -> ``train`` -> ``runs`` -> ``predict`` ->
``report`` -> ``experiments`` -> ``cli``; each imports only from its own layer or lower ones
(checked by tests/test_architecture.py).
"""

from histocam.core.results import EvaluationResult
from histocam.core.rundir import RunDir
from histocam.data import DataConfig, Sample, open_dataset, open_source
from histocam.methods import METHODS, create_method
from histocam.metrics import PxAP
from histocam.runs import Run

__version__ = "0.1.0"
__all__ = ["METHODS", "DataConfig", "EvaluationResult", "PxAP", "Run", "RunDir", "Sample",
           "create_method", "open_dataset", "open_source", "__version__"]
