"""histocam: weakly-supervised classification and ROI localization in histology images.

The package is laid out as a pipeline (see DESIGN.md): ``data`` -> ``models`` -> ``methods`` ->
``train`` -> ``cams`` -> ``metrics`` -> ``experiments``; each stage imports only earlier ones.
"""

from histocam.data import Sample, open_dataset

__version__ = "0.1.0"
__all__ = ["Sample", "open_dataset", "__version__"]
