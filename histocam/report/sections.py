"""The report's section of one run: config, training, test tables, curves, other data, gallery
and experiments, each a collapsible part with the sentence that says what to read in it."""

from __future__ import annotations

from histocam.core.devices import one_cpu_thread
from histocam.core.results import Classification, ClassLocalization, OperatingPoint
from histocam.core.rundir import LABEL
from histocam.data.errors import DataError
from histocam.metrics.localization import ORACLE_NOTE
from histocam.report import figures
from histocam.report.gallery import gallery_rows, gallery_table
from histocam.report.html import details, esc, fmt, image, note, read, section, table, warning
from histocam.report.load import RunResults
from histocam.report.plots import colorbar_uri

AREA = ("TP*", "FN*", "FP*", "TN*")

#: The parts of a run's section, in order: (anchor suffix, title).
PARTS = (("training", "Training"), ("test", "Test"), ("curves", "Threshold curves"),
         ("per-image", "Per-image AP"), ("other-data", "Other data (out of distribution)"),
         ("gallery", "Gallery"), ("experiments", "Experiments"))


def anchor(index: int, part: str | None = None) -> str:
    return f"run-{index}" + (f"-{part}" if part else "")


def class_names_of(results: RunResults) -> list[str]:
    from histocam.data.open import open_source

    return list(open_source(results.run.config.data).class_names)


def point_value(point: OperatingPoint | None, key: str) -> float | None:
    return getattr(point, key) if point is not None else None


def pxap_chance(result) -> float | None:
    return result.localization.chance if result.localization is not None else None


def cl_cells(cl: Classification) -> list[str]:
    """CL (marked ⚠ when near its chance level) and that chance level."""
    return [fmt(cl.accuracy) + (" ⚠" if cl.near_chance else ""), fmt(cl.chance)]


def near_chance_warning(results: RunResults, students: list[str] = ()) -> str:
    """A warning for each selected checkpoint whose test classification is near chance;
    ``students``: the runs of the report that learnt from this run's maps."""
    out = []
    for ckpt in results.test.values():
        cl = ckpt.result.classification
        if cl.near_chance:
            why = (f" Its maps carry little class evidence, and they gave the seeds of "
                   f"{', '.join(students)}: a poor source of seeds."
                   if ckpt.checkpoint == "best-loc" and students else "")
            out.append(warning(f"{results.name}: the {LABEL[ckpt.checkpoint]} checkpoint "
                               f"classifies near chance (CL {fmt(cl.accuracy)} on test; always "
                               f"answering the most frequent class gives {fmt(cl.chance)}).{why}"))
    return "".join(out)


def test_table(results: RunResults, class_names: list[str]) -> str:
    """Test metrics at B-LOC and B-CL; the oracle τ (chosen on test) in its own, labelled columns."""
    headers = ["selection", "epoch", "CL", "CL chance", *[f"CL {c}" for c in class_names], "PxAP",
               "PxAP chance", *AREA, "τ* (valpx)", "Dice FG @τ*", "IoU FG @τ*", "mIoU @τ*",
               "mean image AP", "oracle τ (test)", "oracle Dice FG", "oracle IoU FG"]
    rows = []
    for ckpt in results.test.values():
        cl, loc = ckpt.result.classification, ckpt.result.localization
        star = loc.at_tau_star_valpx if loc is not None else None
        oracle = loc.oracle_test_tau if loc is not None else None
        per_image = loc.per_image_mean_at_tau_star if loc is not None else None
        areas = loc.area_rates if loc is not None else {}
        epoch = results.selected_epoch(LABEL[ckpt.checkpoint])
        rows.append([esc(LABEL[ckpt.checkpoint]), fmt(epoch), *cl_cells(cl),
                     *[fmt(cl.per_class[i] if i < len(cl.per_class) else None)
                       for i in range(len(class_names))],
                     fmt(loc.pxap if loc else None), fmt(loc.chance if loc else None),
                     *[fmt(areas.get(k)) for k in AREA],
                     fmt(ckpt.tau_star, 3), fmt(point_value(star, "dice_fg")),
                     fmt(point_value(star, "iou_fg")), fmt(point_value(star, "miou")),
                     fmt(per_image.ap if per_image is not None else None),
                     fmt(point_value(oracle, "threshold"), 3), fmt(point_value(oracle, "dice_fg")),
                     fmt(point_value(oracle, "iou_fg"))])
    return (table(headers, rows, table_id=None) +
            read("Read CL against its chance (always the most frequent class) and PxAP against its "
                 "chance (an all-ones map, the foreground share); B-LOC is the checkpoint chosen "
                 "for its maps (valpx PxAP), B-CL for its classification (valcl accuracy). "
                 "TP*/FN*/FP*/TN* are pixel rates (%) averaged over thresholds.") +
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
    return ("<h4>PxAP per class (images with foreground)</h4>" +
            table(["selection", "class", "images", "PxAP", "PxAP chance", "mean image AP",
                   "mean FG %"], rows, text_columns=2) +
            read("Each class with foreground on its own: a map must localise in each class, not "
                 "only on average. Compare the mean image AP with the mean FG %, the per-image "
                 "chance level."))


def other_data_table(results: RunResults) -> str:
    rows = [[esc(o.tag), esc(o.result.data), esc(LABEL[o.checkpoint]), fmt(o.result.accuracy),
             fmt(o.result.pxap), fmt(pxap_chance(o.result))] for o in results.other_data]
    return (note("`histocam evaluate RUN --data OTHER`: the run's classifier applied to another "
                 "dataset (classes matched by position), τ* from the run's own valpx.") +
            table(["tag", "data", "selection", "CL", "PxAP", "PxAP chance"], rows,
                  text_columns=3) +
            read("Compare each PxAP with its chance and with the run's own test PxAP above: the "
                 "gap is what does not carry over to the other data."))


def gallery_section(results: RunResults, class_names: list[str], n: int, device: str) -> str:
    ckpt = results.test.get("best-loc")
    if ckpt is None or not ckpt.per_image:
        return note("no gallery: the B-LOC checkpoint has no per-image scores (run `histocam "
                    "evaluate`).")
    from histocam.data.open import open_source

    split = ckpt.result.split
    dataset = open_source(results.run.config.data).dataset(split)
    tau = ckpt.tau_star
    scale = ckpt.result.maps
    parts = [note(f"B-LOC checkpoint; region at τ* = "
                  f"{fmt(tau, 3) if tau is not None else '0.5 (no τ*: valpx has no foreground)'}; "
                  f"maps {'stored by the evaluation' if ckpt.maps else 'computed from the checkpoint'}"
                  "; the mask is outlined in magenta on every panel (an image that is all "
                  "foreground is framed).")]
    methods: dict = {}
    for label, name in enumerate(class_names):
        rows = gallery_rows(results, ckpt, label, n=n, device=device, split=split, dataset=dataset,
                            methods=methods)
        if rows:
            parts.append(f"<h4>{esc(name)}</h4>" + gallery_table(rows))
    parts.append(f'<div class="colorbar"><span>map 0</span>'
                 f'{image(colorbar_uri(), "colour bar of the maps")}<span>1</span>'
                 f"<span>({esc(scale or 'scale not recorded')})</span></div>")
    parts.append(read("Best and worst are ranked by per-image AP (by background IoU at τ* for a "
                      "class without foreground), random are neither; a good map is red inside "
                      "the outline and blue outside it."
                      + (" These maps are min–max normalised per image, so every one reaches 1 "
                         "somewhere, also on an image without foreground."
                         if scale == "min-max per image" else "")))
    return "".join(parts)


def experiments_section(results: RunResults) -> str:
    parts = []
    found = results.experiments
    if found.stain_shift is not None:
        parts.append("<h4>Stain shift</h4>" + note(found.stain_shift.definition) +
                     image(figures.stain_shift([(results.name, found.stain_shift)]), "stain shift")
                     + read("Level 0 is the test set as it is; a curve that stays flat is robust "
                            "to the stain change."))
    if found.tsne is not None:
        tsne = found.tsne
        uri = figures.tsne(tsne, f"{results.name} {LABEL.get(tsne.checkpoint, '')}")
        parts.append("<h4>t-SNE of FG/BG pixel features</h4>" +
                     note(f"{tsne.definition} Separability J (mean over test images): "
                          f"{fmt(tsne.separability.mean, 3)}.") + (image(uri, "t-SNE") if uri else "")
                     + read("Red and blue points apart mean features that separate foreground "
                            "from background; J measures it (higher: further apart)."))
    if found.thresholds is not None:
        curves = [(f"{results.name} {LABEL.get(k, k)}", v)
                  for k, v in found.thresholds.checkpoints.items()]
        parts.append("<h4>Threshold sensitivity</h4>" + note(found.thresholds.definition) +
                     image(figures.threshold_sensitivity(curves), "threshold sensitivity") +
                     read("A share that collapses right after τ = 0 is a map whose values sit "
                          "near zero: its regions change a lot with the threshold."))
    return "".join(parts)


def run_section(index: int, results: RunResults, n_gallery: int, device: str,
                students: list[str] = ()) -> tuple[str, list[tuple[str, str]]]:
    """The run's HTML and its table-of-contents entries (anchor, title); ``students``: the runs
    of the report that learnt from its maps."""
    try:
        class_names = class_names_of(results)
    except (DataError, OSError, ValueError) as exc:  # the data may be gone: the rest still shows
        class_names = []
        data_note = note(f"data not readable ({' '.join(str(exc).split())}): no gallery")
    else:
        data_note = ""
    r = results.run
    head = [f'<h2 id="{anchor(index)}">{esc(results.name)}</h2>',
            f"<p>method <b>{esc(results.method)}</b>, data {esc(r.config.data.dataset)}, seed "
            f"{esc(r.config.seed)}; directory <code>{esc(r.dir)}</code></p>",
            near_chance_warning(results, students),
            details("resolved config", f"<pre>{esc(results.config_text)}</pre>")]
    bodies: dict[str, str] = {}
    curves = figures.training_curves(results)
    bodies["training"] = (image(curves, "training curves") + read(
        "Losses (left) and validation scores (right) per epoch; the vertical lines mark the "
        "epochs selected as B-LOC (best valpx PxAP: the maps) and B-CL (best valcl accuracy: the "
        "classifier).") if curves else note("no training log"))
    checkpoints = list(results.test.values())
    if not checkpoints:
        bodies["test"] = note(f"not evaluated: run `histocam evaluate {r.dir}` (or `histocam "
                              "report --evaluate`)") + data_note
    else:
        bodies["test"] = test_table(results, class_names) + per_class_table(results)
        uri = figures.threshold_curves(checkpoints)
        if uri:
            bodies["curves"] = image(uri, "threshold curves") + read(
                "Each pixel rate (%) as the threshold τ grows; the dash-dotted line is τ* (chosen "
                "on valpx). TP is PxRec by definition, so they are one curve.")
        uri = figures.per_image_ap(checkpoints, class_names)
        if uri:
            bodies["per-image"] = image(uri, "per-image AP") + read(
                "How the images of each class spread: a mean PxAP can hide many images near 0.")
        if results.other_data:
            bodies["other-data"] = other_data_table(results)
        with one_cpu_thread():
            gallery = gallery_section(results, class_names, n_gallery, device) if class_names \
                else ""
        bodies["gallery"] = gallery or data_note
        experiments = experiments_section(results)
        if experiments:
            bodies["experiments"] = experiments
    parts = [section(anchor(index, key), title, bodies[key]) for key, title in PARTS
             if key in bodies]
    entries = [(anchor(index, key), title) for key, title in PARTS if key in bodies]
    return "\n".join(p for p in head + parts if p), entries
