"""``predict(RUN, INPUTS, OUT)``: a trained run applied to images and whole slides.

Outputs: images in ``OUT`` (``STEM.*``, ``predictions.csv``: ``images.py``), each slide in its own
folder ``OUT/slides/STEM/`` (``slide.py``), so an image and a slide of one stem never share a
file; ``summary.csv`` lists every input with its status (``batch.py``). Output names are the
files' stems made unique over the whole call (``-2``, ``-3``, ... for repeats).

Many slides across processes: ``shard=(i, N)``, or under ``torchrun`` RANK/WORLD_SIZE (with
``LOCAL_RANK`` choosing the GPU), splits the work (``batch.py``: each process its own share first,
lock files so that no slide is predicted twice); each process writes its own
``predictions-shard-I-of-N.csv`` and ``summary-shard-I-of-N.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from histocam.core.devices import command_device
from histocam.core.launch import launch
from histocam.data.errors import DataError
from histocam.data.mpp import dataset_mpp
from histocam.predict.aggregate import resolve_aggregation
from histocam.predict.batch import Summary, run_slides
from histocam.predict.images import ImageOutputs, predict_images
from histocam.predict.inputs import collect_inputs, unique_stems
from histocam.predict.predictor import Predictor
from histocam.predict.slide import DEFAULT_TILE, SlideOptions, tile_mpp
from histocam.runs.run import Run
from histocam.train.memory import fit_batch


@dataclass
class PredictResult:
    images_csv: Path | None = None
    slides: list[dict] = field(default_factory=list)
    shard: tuple[int, int] = (0, 1)
    notes: list[str] = field(default_factory=list)
    summary_csv: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, error line)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def default_tile(run: Run) -> int:
    """The training images' size in pixels: the synthetic tile size, else ``DEFAULT_TILE``."""
    data = run.config.data
    return data.synthetic.size if data.is_synthetic else DEFAULT_TILE


def slide_positive(predictor: Predictor) -> int | None:
    """The slide's positive class: the run's (its data's class that is not the fully negative
    one), else a class named by ``--map-class``, else none."""
    return predictor.positive_class if predictor.positive_class is not None else predictor.map_class


def predict(run: str | Path | Run, inputs: list[str | Path], out: str | Path, *,
            checkpoint: str = "best-loc", device: str = "auto", map_class: str = "auto",
            threshold: float | None = None, batch_size: int | None = None,
            num_workers: int = 2, image_outputs: ImageOutputs | None = None,
            slide_options: SlideOptions | None = None, progress: bool = False,
            skip_errors: bool | None = None, shard: tuple[int, int] | None = None
            ) -> PredictResult:
    """Predict every image and slide of ``inputs`` (files, folders, CSV manifests) into ``out``
    (module docstring). ``skip_errors``: None is on for a batch, off for one file."""
    run = run if isinstance(run, Run) else Run(run)
    options = replace(slide_options or SlideOptions(), num_workers=num_workers, progress=progress)
    found = collect_inputs(list(inputs), keep_going=True)
    skip = found.batch if skip_errors is None else skip_errors
    if found.failed and not skip:
        raise DataError(None, found.failed[0][1])
    job = launch()
    shard = shard or (job.rank, job.world)
    device = str(command_device(device))  # under torchrun: the rank's own GPU
    predictor = Predictor.from_run(run, checkpoint, device=device, map_class=map_class,
                                   threshold=threshold)
    batch = batch_size or fit_batch(predictor.map_method, predictor.eval_size, predictor.device,
                                    limit=predictor.batch_size)
    options = replace(options, batch_size=batch).check()
    positive = slide_positive(predictor)
    run_mpp = dataset_mpp(run.config.data)
    if found.slides:  # configuration errors before the first slide
        tile_mpp(options, run_mpp)
        resolve_aggregation(options.aggregation, positive, options.top_k)
    out = Path(out)
    index, count = shard
    suffix = "" if count == 1 else f"-shard-{index}-of-{count}"
    summary = Summary(out / f"summary{suffix}.csv")
    result = PredictResult(shard=shard, summary_csv=summary.path)
    if index == 0:
        for path, why in found.skipped:
            summary.add(path, "other", "skipped", error=why)
        for path, error in found.failed:
            summary.add(path, "input", "failed", error=" ".join(error.split()))
    image_outputs = image_outputs or ImageOutputs()
    if found.images and image_outputs.regions and predictor.tau is None:
        result.notes.append(f"region outputs not written: {predictor.tau_source}")
    images = found.images[index::count]
    if images:
        def failed_image(path: Path, error: str) -> None:
            summary.add(path, "image", "failed", error=" ".join(error.split()))

        result.images_csv = predict_images(
            predictor, images, out, batch_size=batch, num_workers=num_workers,
            outputs=image_outputs, progress=progress, csv_name=f"predictions{suffix}.csv",
            stems=unique_stems(found.images)[index::count],
            on_error=failed_image if skip else None)
        bad = {r["file"] for r in summary.rows}
        for path in images:
            if str(path) not in bad:
                summary.add(path, "image", "done", output=str(out))
    if found.slides:
        result.slides = run_slides(
            predictor, found.slides, unique_stems(found.slides), out / "slides", options,
            summary, shard=shard, skip_errors=skip,
            slide_args={"default_tile": default_tile(run), "run_mpp": run_mpp,
                        "positive": positive})
    summary.write()
    result.failures = summary.failures
    result.skipped = [(str(p), why) for p, why in found.skipped]
    return result

