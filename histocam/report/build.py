"""``build_report``: runs -> one self-contained HTML page (``histocam report``)."""

from __future__ import annotations

from pathlib import Path

from histocam.core.progress import Stages
from histocam.core.rundir import SELECTED
from histocam.report.compare import (
    SIGN,
    comparison_table,
    cross_experiments,
    paired_tests,
    teachers_first,
)
from histocam.report.html import esc, note, page, read, section, toc
from histocam.report.load import RunResults, expand_run_dirs, load_results
from histocam.report.sections import run_section
from histocam.report.slides import slide_section
from histocam.runs.run import Run


def evaluate_missing(run_dirs: list[Path], device: str = "auto") -> list[str]:
    """Evaluate on test each selected checkpoint that has no stored test metrics (trained runs
    only); returns what was evaluated."""
    done = []
    for directory in run_dirs:
        run = Run(directory)
        if not run.trained():
            continue
        for ckpt in SELECTED:
            if not run.dir.evaluation(ckpt).json.is_file():
                run.evaluate(ckpt, "test", device=device)
                done.append(f"{run.dir} {ckpt}")
    return done


def render(all_results: list[RunResults], *, n_gallery: int = 3, device: str = "cpu",
           title: str = "histocam report", slides: list[Path] | None = None) -> str:
    """The page: a header that says how to read it, the table of contents, the comparison across
    runs, one section per run (teachers before their students), then the predicted slides of
    ``slides`` (prediction folders) when given."""
    all_results = teachers_first(all_results)
    stages = Stages(len(all_results) + (1 if all_results else 0) + (1 if slides else 0))
    body, entries = [], []
    if all_results:
        stages.next("report: the comparison across runs")
        experiments, any_experiments = cross_experiments(all_results)
        body += [section("comparison", "Comparison of the runs",
                         note("test split; τ* = argmax mIoU on the run's own valpx (never on "
                              "test); PxAP chance = the PxAP of an all-ones map (the foreground "
                              "share); CL chance = always answering the most frequent class; J = "
                              "FG/BG separability of the encoder's last features, when the "
                              "evaluation computed it") + comparison_table(all_results)),
                 section("paired-tests", "Paired t-tests of per-image AP",
                         paired_tests(all_results))]
        entries += [("comparison", "Comparison of the runs", []),
                    ("paired-tests", "Paired t-tests of per-image AP", [])]
        if any_experiments:
            body.append(section("experiments", "Experiments across runs", experiments))
            entries.append(("experiments", "Experiments across runs", []))
    for i, r in enumerate(all_results):
        stages.next(f"report: {r.name} (tables, curves, gallery)")
        students = [o.name for o in all_results if o.teacher_dir is not None
                    and o.teacher_dir.resolve() == r.run.dir.root.resolve()]
        html, parts = run_section(i, r, n_gallery, device, students)
        body.append(html)
        entries.append((f"run-{i}", r.name, parts))
    if slides:
        stages.next("report: the predicted slides")
        body.append(slide_section(slides))
        entries.append(("slides", "Slides", []))
    header = [f"<h1>{esc(title)}</h1>"]
    if all_results:
        header.append(read(f"{len(all_results)} run(s). Every PxAP is shown next to its chance "
                           f"level and every CL next to its own; {SIGN}. Each part below folds "
                           "and unfolds by its title."))
    header.append(toc(entries))
    return page(title, "\n".join(header + body))


def build_report(runs: list[str | Path], out: str | Path, *, n_gallery: int = 3,
                 device: str = "cpu", evaluate: bool = False, title: str = "histocam report",
                 slides: list[str | Path] | None = None) -> Path:
    """Write the report of ``runs`` (run directories, or folders of runs) and of the predicted
    slides in ``slides`` (``histocam predict`` output folders) to ``out``."""
    if not runs and not slides:
        raise ValueError("nothing to report: give run directories and/or --slides folders")
    run_dirs = expand_run_dirs([Path(r) for r in runs]) if runs else []
    if evaluate:
        evaluate_missing(run_dirs, device)
    all_results = [load_results(d) for d in run_dirs]
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(out))
    text = render(all_results, n_gallery=n_gallery, device=device, title=title,
                  slides=[Path(f) for f in slides or []])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
