"""``predict(RUN, INPUTS, OUT)``: a trained run applied to images and whole slides.

Many slides across processes: started by ``torchrun`` (the launcher of distributed training), each
process reads ``RANK``/``WORLD_SIZE`` (and ``LOCAL_RANK`` for its GPU) from the environment and
takes every WORLD_SIZE-th slide and image from rank onwards; each writes its own slides (and its
own ``predictions-rank<R>.csv`` of images). No process waits for another, so there is no scheduler
and nothing to merge except the image CSVs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from histocam.core.devices import command_device
from histocam.core.launch import launch
from histocam.predict.images import ImageOutputs, predict_images
from histocam.predict.inputs import collect_inputs, unique_stems
from histocam.predict.predictor import Predictor
from histocam.predict.wsi import DEFAULT_TILE, SlideOptions, predict_slide
from histocam.runs.run import Run


@dataclass
class PredictResult:
    images_csv: Path | None = None
    slides: list[dict] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    notes: list[str] = field(default_factory=list)


def default_tile(run: Run) -> int:
    """The training images' scale: the synthetic tile size, else ``DEFAULT_TILE`` (level 0)."""
    data = run.config.data
    return data.synthetic.size if data.is_synthetic else DEFAULT_TILE


def predict(run: str | Path | Run, inputs: list[str | Path], out: str | Path, *,
            checkpoint: str = "best-loc", device: str = "auto", map_class: str = "auto",
            threshold: float | None = None, batch_size: int | None = None,
            num_workers: int = 2, image_outputs: ImageOutputs | None = None,
            slide_options: SlideOptions | None = None, progress: bool = False) -> PredictResult:
    """Predict every image and slide of ``inputs`` (files, folders, CSV manifests) into ``out``."""
    run = run if isinstance(run, Run) else Run(run)
    found = collect_inputs(list(inputs))
    job = launch()
    rank, world = job.rank, job.world
    device = str(command_device(device))  # under torchrun: the rank's own GPU
    predictor = Predictor.from_run(run, checkpoint, device=device, map_class=map_class,
                                   threshold=threshold)
    out = Path(out)
    batch = batch_size or predictor.batch_size
    result = PredictResult(rank=rank, world_size=world)
    image_outputs = image_outputs or ImageOutputs()
    if image_outputs.regions and predictor.tau is None:
        result.notes.append(f"region outputs not written: {predictor.tau_source}")
    images = found.images[rank::world]
    if images:  # names unique over all the images, not only this rank's share
        result.images_csv = predict_images(
            predictor, images, out, batch_size=batch, num_workers=num_workers,
            outputs=image_outputs, progress=progress,
            csv_name="predictions.csv" if world == 1 else f"predictions-rank{rank}.csv",
            stems=unique_stems(found.images)[rank::world])
    options = replace(slide_options or SlideOptions(), batch_size=batch, num_workers=num_workers,
                      progress=progress)
    tile = default_tile(run)
    stems = unique_stems(found.slides)
    for path, stem in list(zip(found.slides, stems))[rank::world]:
        result.slides.append(predict_slide(predictor, path, out, stem, options, tile,
                                           predictor.positive_class))
    return result
