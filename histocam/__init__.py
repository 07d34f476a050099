"""histocam: weakly-supervised classification and ROI localization in histology images.

The package is laid out as a pipeline (see DESIGN.md): ``data`` -> ``models`` -> ``methods`` ->
``train`` -> ``cams`` -> ``metrics`` -> ``experiments``; each stage imports only earlier ones,
except the shared map normalisation of ``cams.normalize`` and the metrics used during training.
"""

from histocam.data import DataConfig, Sample, open_dataset, open_source
from histocam.methods import METHODS, create_method
from histocam.metrics import PxAP

__version__ = "0.1.0"
__all__ = ["METHODS", "DataConfig", "PxAP", "Sample", "create_method", "open_dataset",
           "open_source", "__version__"]
