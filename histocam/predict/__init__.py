"""Applying a trained run to new data: images, folders, CSV manifests and whole slides.

``predict(RUN, INPUTS, OUT)`` (``api.py``) finds the inputs (``inputs.py``), loads the run as a
``Predictor`` (``predictor.py``: checkpoint choice, the map's class, τ*), predicts images
(``images.py``) and slides (``batch.py``: shards, lock files, bad files, ``summary.csv``;
``slide.py``: one slide, with ``slide_outputs.py``, ``tile_outputs.py``, ``legend.py`` and
``aggregate.py``), on the model-independent slide machinery of ``histocam.wsi``; ``export.py``
colour maps, overlays and TIFF heatmaps.
"""

from histocam.predict.api import PredictResult, predict
from histocam.predict.images import ImageOutputs, predict_images
from histocam.predict.predictor import Predictor
from histocam.predict.slide import SlideOptions, predict_slide

__all__ = ["ImageOutputs", "PredictResult", "Predictor", "SlideOptions", "predict",
           "predict_images", "predict_slide"]
