"""Map extraction: top-down CAMs (Grad-CAM and confidence families) usable on any torch model."""

from histocam.cams.ablationcam import AblationCAM
from histocam.cams.base import TopDownCAM
from histocam.cams.gradcam import GradCAM
from histocam.cams.gradcampp import GradCAMPlusPlus
from histocam.cams.iscam import ISCAM
from histocam.cams.layercam import LayerCAM
from histocam.cams.scorecam import ScoreCAM
from histocam.cams.smoothgradcampp import SmoothGradCAMPlusPlus
from histocam.cams.sscam import SSCAM
from histocam.cams.xgradcam import XGradCAM

__all__ = ["AblationCAM", "GradCAM", "GradCAMPlusPlus", "ISCAM", "LayerCAM",
           "SSCAM", "ScoreCAM", "SmoothGradCAMPlusPlus", "TopDownCAM", "XGradCAM"]
