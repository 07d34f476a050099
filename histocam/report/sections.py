"""The report's HTML sections: one per run, then the comparison across runs."""

from __future__ import annotations

import itertools
import math

from histocam.core.results import ClassLocalization, OperatingPoint
from histocam.core.rundir import LABEL, SELECTED
from histocam.data.errors import DataError
from histocam.maps.store import dataset_identity
from histocam.metrics.localization import ORACLE_NOTE
from histocam.metrics.stats import paired_ttest
from histocam.report import figures
from histocam.report.gallery import gallery_image, gallery_rows, one_cpu_thread
from histocam.report.html import details, esc, fmt, image, note, table
from histocam.report.load import RunResults
from histocam.report.plots import array_uri

AREA = ("TP*", "FN*", "FP*", "TN*")


def anchor(index: int) -> str:
    return f"run-{index}"


def class_names_of(results: RunResults) -> list[str]:
    from histocam.data.open import open_source

    return list(open_source(results.run.config.data).class_names)


def _point(point: OperatingPoint | None, key: str) -> float | None:
    return getattr(point, key) if point is not None else None


def test_table(results: RunResults, class_names: list[str]) -> str:
    """Test metrics at B-LOC and B-CL; the oracle τ (chosen on test) in its own, labelled columns."""
    headers = ["selection", "epoch", "CL", *[f"CL {c}" for c in class_names], "PxAP", "chance",
               *AREA, "τ* (valpx)", "Dice FG @τ*", "IoU FG @τ*", "mIoU @τ*", "mean image AP",
               "oracle τ (test)", "oracle Dice FG", "oracle IoU FG"]
    rows = []
    for ckpt in results.test.values():
        cl, loc = ckpt.result.classification, ckpt.result.localization
        star = loc.at_tau_star_valpx if loc is not None else None
        oracle = loc.oracle_test_tau if loc is not None else None
        per_image = loc.per_image_mean_at_tau_star if loc is not None else None
        areas = loc.area_rates if loc is not None else {}
        epoch = results.selected_epoch(LABEL[ckpt.checkpoint])
        rows.append([esc(LABEL[ckpt.checkpoint]), fmt(epoch), fmt(cl.accuracy),
                     *[fmt(cl.per_class[i] if i < len(cl.per_class) else None)
                       for i in range(len(class_names))],
                     fmt(loc.pxap if loc else None), fmt(loc.chance if loc else None),
                     *[fmt(areas.get(k)) for k in AREA],
                     fmt(ckpt.tau_star, 3), fmt(_point(star, "dice_fg")),
                     fmt(_point(star, "iou_fg")), fmt(_point(star, "miou")),
                     fmt(per_image.ap if per_image is not None else None),
                     fmt(_point(oracle, "threshold"), 3), fmt(_point(oracle, "dice_fg")),
                     fmt(_point(oracle, "iou_fg"))])
    return (table(headers, rows, table_id=None) +
            f'<p class="note oracle">oracle columns: {esc(ORACLE_NOTE)}.</p>')


def per_class_table(results: RunResults) -> str:
    rows = []
    for ckpt in results.test.values():
        loc = ckpt.result.localization
        per_class: dict[str, ClassLocalization] = (loc.per_class or {}) if loc is not None else {}
        for name, v in per_class.items():
            rows.append([esc(LABEL[ckpt.checkpoint]), esc(name), fmt(v.n_images), fmt(v.pxap),
                         fmt(v.chance), fmt(v.mean_image_ap), fmt(v.mean_fg_fraction)])
    if not rows:
        return ""
    return "<h4>PxAP per class (images with foreground)</h4>" + table(
        ["selection", "class", "images", "PxAP", "chance", "mean image AP", "mean FG %"], rows,
        text_columns=2)


def other_data_table(results: RunResults) -> str:
    if not results.other_data:
        return ""
    rows = [[esc(o.tag), esc(o.result.data), esc(LABEL[o.checkpoint]), fmt(o.result.accuracy),
             fmt(o.result.pxap), fmt(_chance(o.result))] for o in results.other_data]
    return ("<h3>Other data (out of distribution)</h3>" +
            note("`histocam evaluate RUN --data OTHER`: the run's classifier applied to another "
                 "dataset (classes mapped by index), τ* from the run's own valpx.") +
            table(["tag", "data", "selection", "CL", "PxAP", "chance"], rows, text_columns=3))


def _chance(result) -> float | None:
    return result.localization.chance if result.localization is not None else None


def gallery_section(results: RunResults, class_names: list[str], n: int, device: str) -> str:
    ckpt = results.test.get("best-loc")
    if ckpt is None or not ckpt.per_image:
        return note("no gallery: the B-LOC checkpoint has no per-image scores (run `histocam "
                    "evaluate`).")
    from histocam.data.open import open_source

    split = ckpt.result.split
    dataset = open_source(results.run.config.data).dataset(split)
    tau = ckpt.tau_star
    parts = [note(f"B-LOC; blocks: best | worst | random (by per-image AP; by background IoU at τ* "
                  "for a class without foreground), each image | mask | map | region at τ* = "
                  f"{fmt(tau, 3) if tau is not None else '0.5 (no τ*: valpx has no foreground)'}; "
                  f"maps {'stored by the evaluation' if ckpt.maps else 'computed from the checkpoint'}")]
    methods: dict = {}
    for label, name in enumerate(class_names):
        rows = gallery_rows(results, ckpt, label, n=n, device=device, split=split, dataset=dataset,
                            methods=methods)
        if not rows:
            continue
        legend = [[esc(r.kind), esc(r.image_id), esc(r.score_name), fmt(r.score)] for r in rows]
        parts.append(f"<h4>{esc(name)}</h4>" +
                     image(array_uri(gallery_image(rows), jpeg_quality=85), f"gallery {name}") +
                     details("rows (top to bottom)", table(["kind", "image", "score", "value"],
                                                           legend, text_columns=3)))
    return "".join(parts)


def experiments_section(results: RunResults) -> str:
    parts = []
    found = results.experiments
    if found.stain_shift is not None:
        parts.append("<h4>Stain shift</h4>" + note(found.stain_shift.definition) +
                     image(figures.stain_shift([(results.name, found.stain_shift)]), "stain shift"))
    if found.tsne is not None:
        tsne = found.tsne
        uri = figures.tsne(tsne, f"{results.name} {LABEL.get(tsne.checkpoint, '')}")
        parts.append("<h4>t-SNE of FG/BG pixel features</h4>" +
                     note(f"{tsne.definition} Separability J (mean over test images): "
                          f"{fmt(tsne.separability.mean, 3)}.") + (image(uri, "t-SNE") if uri else ""))
    if found.thresholds is not None:
        curves = [(f"{results.name} {LABEL.get(k, k)}", v)
                  for k, v in found.thresholds.checkpoints.items()]
        parts.append("<h4>Threshold sensitivity</h4>" + note(found.thresholds.definition) +
                     image(figures.threshold_sensitivity(curves), "threshold sensitivity"))
    return "<h3>Experiments</h3>" + "".join(parts) if parts else ""


def run_section(index: int, results: RunResults, n_gallery: int, device: str) -> str:
    try:
        class_names = class_names_of(results)
    except (DataError, OSError, ValueError) as exc:  # the data may be gone: the rest still shows
        class_names = []
        data_note = note(f"data not readable ({' '.join(str(exc).split())}): no gallery")
    else:
        data_note = ""
    r = results.run
    parts = [f'<h2 id="{anchor(index)}">{esc(results.name)}</h2>',
             f"<p>method <b>{esc(results.method)}</b>, data {esc(r.config.data.dataset)}, seed "
             f"{esc(r.config.seed)}; directory <code>{esc(r.dir)}</code></p>",
             details("resolved config", f"<pre>{esc(results.config_text)}</pre>")]
    curves = figures.training_curves(results)
    parts.append("<h3>Training</h3>" + (image(curves, "training curves") if curves
                                        else note("no training log")))
    checkpoints = list(results.test.values())
    if not checkpoints:
        parts.append(note(f"not evaluated: run `histocam evaluate {r.dir}` (or `histocam report "
                          "--evaluate`)"))
        return "\n".join(parts + [data_note])
    parts.append("<h3>Test</h3>" + test_table(results, class_names) + per_class_table(results))
    for title, uri in (("Threshold curves", figures.threshold_curves(checkpoints)),
                       ("Per-image AP", figures.per_image_ap(checkpoints, class_names))):
        if uri:
            parts.append(f"<h3>{esc(title)}</h3>" + image(uri, title))
    parts.append(other_data_table(results))
    with one_cpu_thread():
        gallery = gallery_section(results, class_names, n_gallery, device) if class_names else ""
    parts.append("<h3>Gallery</h3>" + (gallery or data_note))
    parts.append(experiments_section(results))
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------------- across runs
def comparison_table(all_results: list[RunResults]) -> str:
    """One row per run and checkpoint."""
    headers = ["run", "method", "selection", "CL", "PxAP", "chance", *AREA, "τ* (valpx)",
               "Dice FG @τ*", "IoU FG @τ*", "J"]
    rows = []
    for i, res in enumerate(all_results):
        for ckpt in res.test.values():
            result, loc = ckpt.result, ckpt.result.localization
            star = loc.at_tau_star_valpx if loc is not None else None
            areas = loc.area_rates if loc is not None else {}
            j = result.separability.mean if result.separability is not None else None
            rows.append([f'<a href="#{anchor(i)}">{esc(res.name)}</a>', esc(res.method),
                         esc(LABEL[ckpt.checkpoint]), fmt(result.accuracy), fmt(result.pxap),
                         fmt(_chance(result)), *[fmt(areas.get(k)) for k in AREA],
                         fmt(ckpt.tau_star, 3), fmt(_point(star, "dice_fg")),
                         fmt(_point(star, "iou_fg")), fmt(j, 3)])
    return table(headers, rows, table_id="comparison", row_class="comparison-row", text_columns=3)


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
    return (note("per-image AP, b − a; two-sided paired Student t-test (scipy.stats.ttest_rel) "
                 "over the images both runs scored") +
            table(["selection", "run a", "run b", "images", "mean b − a", "t", "p"], rows,
                  table_id="paired-tests", text_columns=3))


def cross_experiments(all_results: list[RunResults]) -> str:
    parts = []
    shift = [(r.name, r.experiments.stain_shift) for r in all_results
             if r.experiments.stain_shift is not None]
    if len(shift) > 1:
        parts.append("<h3>Stain shift</h3>" + image(figures.stain_shift(shift), "stain shift"))
    thresholds = [(f"{r.name} B-LOC", r.experiments.thresholds.checkpoints["best-loc"])
                  for r in all_results if r.experiments.thresholds is not None
                  and "best-loc" in r.experiments.thresholds.checkpoints]
    if len(thresholds) > 1:
        parts.append("<h3>Threshold sensitivity</h3>" +
                     image(figures.threshold_sensitivity(thresholds), "threshold sensitivity"))
    ood = [[esc(r.name), esc(o.tag), esc(o.result.data), esc(LABEL[o.checkpoint]),
            fmt(o.result.accuracy), fmt(o.result.pxap)]
           for r in all_results for o in r.other_data]
    if ood:
        parts.append("<h3>Out of distribution</h3>" +
                     table(["run", "tag", "data", "selection", "CL", "PxAP"], ood, text_columns=4))
    return "\n".join(parts)
