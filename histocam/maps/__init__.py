"""Map extraction: top-down CAMs (Grad-CAM and confidence families) usable on any torch model."""

from histocam.maps.ablationcam import AblationCAM
from histocam.maps.gradcam import GradCAM
from histocam.maps.gradcampp import GradCAMPlusPlus
from histocam.maps.iscam import ISCAM
from histocam.maps.layercam import LayerCAM
from histocam.maps.scorecam import ScoreCAM
from histocam.maps.smoothgradcampp import SmoothGradCAMPlusPlus
from histocam.maps.sscam import SSCAM
from histocam.maps.topdown_cam import TopDownCAM
from histocam.maps.xgradcam import XGradCAM

__all__ = ["AblationCAM", "GradCAM", "GradCAMPlusPlus", "ISCAM", "LayerCAM",
           "SSCAM", "ScoreCAM", "SmoothGradCAMPlusPlus", "TopDownCAM", "XGradCAM"]
