"""``build_report``: runs -> one self-contained HTML page (``histocam report``)."""

from __future__ import annotations

from pathlib import Path

from histocam.core.rundir import SELECTED
from histocam.report.html import esc, note, page
from histocam.report.load import RunResults, expand_run_dirs, load_results
from histocam.report.sections import (
    anchor,
    comparison_table,
    cross_experiments,
    paired_tests,
    run_section,
)
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
    """The page: the runs' comparison and sections, then the predicted slides of ``slides``
    (prediction folders) when given."""
    links = [f'<a href="#{anchor(i)}">{esc(r.name)}</a>' for i, r in enumerate(all_results)]
    if slides:
        links.append('<a href="#slides">slides</a>')
    body = [f"<h1>{esc(title)}</h1>", f"<nav>{' '.join(links)}</nav>"]
    if all_results:
        body += ["<h2>Comparison</h2>",
                 note("test split; τ* = argmax mIoU on the run's own valpx (never on test); chance "
                      "= the PxAP of an all-ones map (the foreground fraction); J = FG/BG "
                      "separability of the encoder's last features, when the evaluation computed "
                      "it"),
                 comparison_table(all_results), "<h3>Paired t-tests</h3>",
                 paired_tests(all_results), cross_experiments(all_results)]
        body += [run_section(i, r, n_gallery, device) for i, r in enumerate(all_results)]
    if slides:
        body.append(slide_section(slides))
    return page(title, "\n".join(body))


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
