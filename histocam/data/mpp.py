"""Microns per pixel of a dataset's images as stored: the scale a run is trained at.

``histocam predict`` tiles slides at this scale (``histocam.wsi.scale``). Known scales:

- GlaS (Warwick-QU): 0.620 µm/px, scanned at 20× (Sirinukunwattana et al., MedIA 2017), for the
  registered ``glas``, a GlaS release folder and the released GLAS split lists;
- CAMELYON16 patches (the released CAMELYON512 lists): level 0 of the slides, 0.243 µm/px at 40×
  (Radboud's scanner; Utrecht's 0.226; Litjens et al., GigaScience 2018);
- the generated datasets (synthetic-colon, synthetic-node): defined as 0.5 µm/px (20×), the MPP
  ``histocam data synth-slide`` writes, whose level 0 is the synthetic training tiles' scale;
- a CSV manifest: its ``mpp`` column (``csv_manifest.manifest_mpp``).

``data.mpp`` in the config overrides all of them; a dataset of none of these kinds has no known
scale.
"""

from __future__ import annotations

from pathlib import Path

from histocam.data.config import DataConfig
from histocam.data.csv_manifest import manifest_mpp
from histocam.data.errors import DataError
from histocam.data.glas import find_release
from histocam.data.open import BENCHMARK_CLASSES, CAMELYON_CLASSES, benchmark_of

GLAS_MPP = 0.620
CAMELYON16_MPP = 0.243
SYNTHETIC_MPP = 0.5


def dataset_mpp(config: DataConfig) -> tuple[float | None, str]:
    """(microns per pixel of the dataset's images, where it comes from); (None, why) when unknown
    (module docstring)."""
    if config.mpp is not None:
        return float(config.mpp), "data.mpp"
    if config.is_synthetic:
        return SYNTHETIC_MPP, f"{config.dataset}: defined as 20× (histocam.data.mpp)"
    if config.dataset == "glas":
        return GLAS_MPP, "GlaS: 20× (Sirinukunwattana et al. 2017)"
    path = Path(config.dataset).expanduser()
    if path.suffix.lower() == ".csv" and path.is_file():
        mpp = manifest_mpp(path)
        if mpp is not None:
            return mpp, f"{path}: mpp column"
    elif path.is_dir():
        benchmark = benchmark_of(path)
        if benchmark is not None:
            if BENCHMARK_CLASSES[benchmark.lower()] == CAMELYON_CLASSES:
                return CAMELYON16_MPP, "CAMELYON16: level 0 at 40× (Litjens et al. 2018)"
            return GLAS_MPP, "GlaS: 20× (Sirinukunwattana et al. 2017)"
        try:
            find_release(path)
        except DataError:
            pass
        else:
            return GLAS_MPP, "GlaS: 20× (Sirinukunwattana et al. 2017)"
    return None, (f"the training data ({config.dataset}) does not say its microns per pixel: pass "
                  "--mpp or --magnification (and train with data.mpp, or an mpp column in the "
                  "CSV, to record it)")
