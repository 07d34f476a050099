"""Applying a trained run to new data: images, folders, CSV manifests and whole slides.

``predict(RUN, INPUTS, OUT)`` (``api.py``) finds the inputs (``inputs.py``), loads the run as a
``Predictor`` (``predictor.py``: checkpoint choice, the map's class, τ*), predicts images
(``images.py``) and slides (``wsi.py``: ``slides.py`` reading and tiling, ``tissue.py``,
``stitch.py`` blending, ``export.py`` pyramidal TIFF and overlays, ``geojson.py`` QuPath regions).
"""

from histocam.predict.api import PredictResult, predict
from histocam.predict.images import ImageOutputs, predict_images
from histocam.predict.predictor import Predictor
from histocam.predict.slides import SlideReader, TileGrid, tile_grid
from histocam.predict.stitch import Stitcher, ramp_window, tile_window
from histocam.predict.wsi import SlideOptions, predict_slide

__all__ = ["ImageOutputs", "PredictResult", "Predictor", "SlideOptions", "SlideReader", "Stitcher",
           "TileGrid", "predict", "predict_images", "predict_slide", "ramp_window",
           "tile_grid", "tile_window"]
