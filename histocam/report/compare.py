"""The report's comparison across runs: one table of every run and checkpoint, paired t-tests of
per-image AP, and the experiments of several runs side by side.

One sign convention: a difference is run b − run a, where a is listed first; a teacher is always
listed before the students trained from its maps (``teachers_first``), so for them it is
student − teacher, as ``histocam demo`` and ``histocam pipeline`` print it.
"""

from __future__ import annotations

import itertools
import math

from histocam.core.rundir import LABEL, SELECTED
from histocam.maps.store import dataset_identity
from histocam.metrics.stats import paired_ttest
from histocam.report import figures
from histocam.report.html import esc, fmt, image, note, read, table
from histocam.report.load import RunResults
from histocam.report.sections import AREA, anchor, cl_cells, point_value, pxap_chance

SIGN = ("differences are run b − run a, a listed first; a teacher is listed before the students "
        "trained from its maps, so for them a difference is student − teacher")


def teachers_first(all_results: list[RunResults]) -> list[RunResults]:
    """The runs in their order, except that a seeded student's teacher, when present, comes
    right before the first of its students."""
    by_dir = {r.run.dir.root.resolve(): r for r in all_results}
    ordered: list[RunResults] = []
    for r in all_results:
        teacher = by_dir.get(r.teacher_dir.resolve()) if r.teacher_dir else None
        for run in (teacher, r):
            if run is not None and all(run is not o for o in ordered):
                ordered.append(run)
    return ordered


def comparison_table(all_results: list[RunResults]) -> str:
    """One row per run and checkpoint."""
    headers = ["run", "method", "selection", "CL", "CL chance", "PxAP", "PxAP chance", *AREA,
               "τ* (valpx)", "Dice FG @τ*", "IoU FG @τ*", "J"]
    rows = []
    for i, res in enumerate(all_results):
        for ckpt in res.test.values():
            result, loc = ckpt.result, ckpt.result.localization
            star = loc.at_tau_star_valpx if loc is not None else None
            areas = loc.area_rates if loc is not None else {}
            j = result.separability.mean if result.separability is not None else None
            rows.append([f'<a href="#{anchor(i)}">{esc(res.name)}</a>', esc(res.method),
                         esc(LABEL[ckpt.checkpoint]), *cl_cells(result.classification),
                         fmt(result.pxap), fmt(pxap_chance(result)),
                         *[fmt(areas.get(k)) for k in AREA], fmt(ckpt.tau_star, 3),
                         fmt(point_value(star, "dice_fg")), fmt(point_value(star, "iou_fg")), fmt(j, 3)])
    return (table(headers, rows, table_id="comparison", row_class="comparison-row",
                  text_columns=3) +
            read("Read each PxAP against its chance: a map is useful only above it. B-LOC rows are "
                 "the checkpoints chosen for their maps, B-CL rows for their classification; ⚠ "
                 "marks a CL near its chance (always the most frequent class)."))


def paired_tests(all_results: list[RunResults]) -> str:
    """Paired t-tests of per-image AP between every two runs, at each checkpoint, on the images
    both scored (PixelCAM Table 2)."""
    rows = []
    identity = {id(r): dataset_identity(r.run.config.data) for r in all_results}
    for ckpt in SELECTED:
        for a, b in itertools.combinations(all_results, 2):
            ca, cb = a.test.get(ckpt), b.test.get(ckpt)
            if ca is None or cb is None or identity[id(a)] != identity[id(b)]:
                continue  # the same image ids on other data (e.g. another synthetic seed) differ
            sa, sb = ca.scores("ap"), cb.scores("ap")
            shared = sorted(i for i in set(sa) & set(sb)
                            if not (math.isnan(sa[i]) or math.isnan(sb[i])))
            if len(shared) < 2:
                continue
            t = paired_ttest([sa[i] for i in shared], [sb[i] for i in shared])
            rows.append([esc(LABEL[ckpt]), esc(a.name), esc(b.name), fmt(t.n),
                         fmt(t.mean_difference, 2), fmt(t.t, 2),
                         f"{t.p:.3g}" if not math.isnan(t.p) else "n/a"])
    if not rows:
        return note("no two runs on the same data share at least two test images with foreground: "
                    "no paired test")
    return (note(f"per-image AP; {SIGN}; two-sided paired Student t-test (scipy.stats.ttest_rel) "
                 "over the images both runs scored") +
            table(["selection", "run a", "run b", "images", "mean b − a", "t", "p"], rows,
                  table_id="paired-tests", text_columns=3) +
            read("A positive mean with a small p says b's maps rank the foreground pixels of an "
                 "image above its background pixels better than a's, image by image. Per-image AP "
                 "ignores how a map's values compare across images, which PxAP (all pixels of all "
                 "images pooled) rewards: a map that stays low on images without foreground can "
                 "win on PxAP and lose here."))


def cross_experiments(all_results: list[RunResults]) -> tuple[str, bool]:
    """The experiments of several runs side by side; (HTML, whether there is any)."""
    parts = []
    shift = [(r.name, r.experiments.stain_shift) for r in all_results
             if r.experiments.stain_shift is not None]
    if len(shift) > 1:
        parts.append("<h3>Stain shift</h3>" + image(figures.stain_shift(shift), "stain shift") +
                     read("Level 0 is the test set as it is; the flatter a curve, the more robust "
                          "that run is to the stain change."))
    thresholds = [(f"{r.name} B-LOC", r.experiments.thresholds.checkpoints["best-loc"])
                  for r in all_results if r.experiments.thresholds is not None
                  and "best-loc" in r.experiments.thresholds.checkpoints]
    if len(thresholds) > 1:
        parts.append("<h3>Threshold sensitivity</h3>" +
                     image(figures.threshold_sensitivity(thresholds), "threshold sensitivity") +
                     read("A share that collapses right after τ = 0 is a map whose values sit near "
                          "zero: its regions change a lot with the threshold."))
    ood = [[esc(r.name), esc(o.tag), esc(o.result.data), esc(LABEL[o.checkpoint]),
            fmt(o.result.accuracy), fmt(o.result.pxap), fmt(pxap_chance(o.result))]
           for r in all_results for o in r.other_data]
    if ood:
        parts.append("<h3>Out of distribution</h3>" +
                     table(["run", "tag", "data", "selection", "CL", "PxAP", "PxAP chance"], ood,
                           text_columns=4) +
                     read("The runs' checkpoints on other data (classes matched by position, τ* "
                          "from each run's own valpx): compare each PxAP with its chance."))
    return "\n".join(parts), bool(parts)
