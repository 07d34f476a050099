"""The GlaS study over patient-disjoint folds: every crossval folder of one root, side by side.

Reads the summary of every cross-validation folder ``ROOT/<name>`` (written by ``histocam
crossval``; the commands are in ``benchmarks/quality/glas_crossval.sh``) and prints, as markdown:

1. every teacher and student at B-LOC and B-CL: test PxAP as mean ± std over the folds (each fold
   the mean of its seeds), over all runs, chance, the colour floor (darkness map) and CL;
2. each student against its teacher: the PxAP difference per run, how many runs gain, and the
   paired t-test of the per-image AP over every image (one test per seed);
3. the papers' settings (``ROOT/paper/...``) beside the histocam settings;
4. how the checkpoint choice transfers: for single-model folders, B-LOC (valpx), B-CL (valcl
   accuracy) and the last epoch on test, and how often B-LOC picks a checkpoint that is worse on
   the test fold than the last epoch. Reported, never used to choose anything;
5. per class: PxAP against chance and the mean per-image AP against the mean foreground fraction,
   and, with ``--figure``, a scatter of per-image AP against foreground fraction per class
   (teachers in the first row, their students in the second);
6. each map against the colour floor image by image: the paired t-test of the model's per-image AP
   against the darkness map's on the same test images (one test per seed);
7. what a recipe is chosen on: per folder, the selection criteria on validation data only (the
   best valpx PxAP, the B-LOC criterion; the best valcl accuracy, the B-CL one) from each run's
   log, mean ± std over folds;
8. levers (``glas_levers.py``): each ``ROOT/levers/<name>`` folder (a config with settings changed)
   beside the folder it changes (of the ``ROOT`` folders and the other levers with the same
   methods, the one whose config differs in the fewest settings), on the folds and seeds both
   ran: the changed settings, the B-LOC criterion on valpx of each and their difference over folds
   (what a lever is chosen on), and the test PxAP at B-LOC (reported, never used to choose);
   each lever's map also joins tables 2 and 6, labelled by its folder;
9. rounds: each ``ROOT/rounds/<name>`` folder (PixelCAM whose teacher runs are an earlier round's
   students, ``--teacher-runs ".../fold{fold}-s{seed}/<student>"``) joins tables 1, 2, 6 and 7 as
   the setting "histocam, next round": its student against the earlier round's, and its
   validation criterion beside the earlier round's in the levers' rows.

Usage: python benchmarks/quality/glas_crossval.py runs/cv [--figure docs/glas-per-image.png]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from glas_levers import criteria, lever_table
from tables import mean_std

from histocam.core.experiment_results import CrossvalResult
from histocam.core.rundir import LABEL, SELECTED, runs_in
from histocam.core.studydirs import CrossvalDir
from histocam.data.open import open_source
from histocam.maps.colour import COLOUR_FLOOR, colour_map_pxap
from histocam.metrics.per_image import PerImageScores
from histocam.metrics.stats import paired_ttest
from histocam.runs import Run


def floors(summary: CrossvalResult) -> tuple[float, float]:
    fl = summary.floors.values()
    return statistics.mean(f.chance for f in fl), statistics.mean(f.darkness for f in fl)


def load(root: Path) -> dict[str, CrossvalResult]:
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        summary = CrossvalResult.read(CrossvalDir(folder).summary_json)
        if summary is not None:
            out[folder.name] = summary
    return out


def roles(name: str, summary: CrossvalResult) -> list[tuple[str, str]]:
    if summary.pipeline:
        methods = summary.runs[0].methods
        return [("teacher", methods.teacher), ("student", f"{methods.student} on "
                                                          f"{methods.teacher}")]
    return [("model", name)]


def model_table(studies: dict[str, CrossvalResult], setting: str) -> list[str]:
    lines = ["| setting | model | selection | PxAP over folds | over runs (n) | chance | colour floor "
             "| PxAP − floor | CL |", "|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for name, s in studies.items():
        chance, floor = floors(s)
        for role, label in roles(name, s):
            if label in seen:  # a teacher folder is also every student folder's teacher
                continue
            seen.add(label)
            for ckpt in SELECTED:
                px = s.fold_means(role, ckpt)
                every = [r.role(role)[ckpt].pxap for r in s.runs]
                cl = s.fold_means(role, ckpt, "accuracy")
                lines.append(f"| {setting} | {label} | {LABEL[ckpt]} | {mean_std(px)} | "
                             f"{mean_std(every)} ({len(every)}) | {chance:.1f} | {floor:.1f} | "
                             f"{statistics.mean(px) - floor:+.1f} | {mean_std(cl)} |")
    return lines


STUDENT_HEADER = ["| setting | student | selection | Δ PxAP over folds | runs that gain | per seed: "
                  "per-image Δ, p (n) |", "|---|---|---|---|---|---|"]


def student_rows(setting: str, label: str, s: CrossvalResult) -> list[str]:
    """A pipeline's student against its teacher at each selection: the difference over folds, the
    runs that gain, and one paired t-test of per-image AP per seed."""
    lines = []
    for ckpt in SELECTED:
        delta = [a - b for a, b in zip(s.fold_means("student", ckpt),
                                       s.fold_means("teacher", ckpt))]
        per_run = [r.student[ckpt].pxap - r.teacher[ckpt].pxap for r in s.runs]
        tests = []
        for seed in s.seeds:
            mine = [r for r in s.runs if r.seed == seed]
            a = {i: v for r in mine for i, v in r.teacher[ckpt].per_image_ap.items()}
            b = {i: v for r in mine for i, v in r.student[ckpt].per_image_ap.items()}
            shared = sorted(set(a) & set(b))
            t = paired_ttest([a[i] for i in shared], [b[i] for i in shared])
            tests.append(f"{t.mean_difference:+.1f}, {t.p:.2g} ({t.n})")
        gains = sum(d > 0 for d in per_run)
        lines.append(f"| {setting} | {label} | {LABEL[ckpt]} | {mean_std(delta)} | {gains} of "
                     f"{len(per_run)} | {'; '.join(tests)} |")
    return lines


def student_table(studies: dict[str, CrossvalResult], setting: str) -> list[str]:
    return STUDENT_HEADER + [line for name, s in studies.items() if s.pipeline
                             for line in student_rows(setting, roles(name, s)[1][1], s)]


# per-image darkness AP of one fold's test images, by the data config that produced them: the
# folders of one study share their folds, so each fold's floor is computed once
_DARKNESS: dict[str, dict[str, float]] = {}


def darkness_per_image(folder: Path) -> dict[str, float]:
    """The darkness map's per-image AP on every fold's test images (by image id), on the images as
    the folder's runs see them (evaluation size, stain normalisation)."""
    out: dict[str, float] = {}
    for path in CrossvalDir(folder).folds():
        data = Run(runs_in(path)[-1].root).config.data
        key = data.model_dump_json()
        if key not in _DARKNESS:
            rows = {COLOUR_FLOOR: PerImageScores()}
            colour_map_pxap(open_source(data).dataset("test"), data, per_image=rows)
            _DARKNESS[key] = {r["id"]: r["ap"] for r in rows[COLOUR_FLOOR].rows}
        out.update(_DARKNESS[key])
    return out


FLOOR_HEADER = ["| setting | model | selection | per seed: per-image AP − darkness map's, p (n) | "
                "images above the darkness map |", "|---|---|---|---|---|"]


def floor_rows(setting: str, label: str, s: CrossvalResult, role: str,
               floor: dict[str, float]) -> list[str]:
    """One role's maps against the darkness map's on the same test images, at each selection: one
    paired t-test of per-image AP per seed, and the images on which the map is above."""
    lines = []
    for ckpt in SELECTED:
        tests, above, total = [], 0, 0
        for seed in s.seeds:
            ap = {i: v for r in s.runs if r.seed == seed
                  for i, v in r.role(role)[ckpt].per_image_ap.items()}
            shared = sorted(set(ap) & set(floor))
            t = paired_ttest([floor[i] for i in shared], [ap[i] for i in shared])
            tests.append(f"{t.mean_difference:+.1f}, {t.p:.2g} ({t.n})")
            above += sum(ap[i] > floor[i] for i in shared)
            total += len(shared)
        lines.append(f"| {setting} | {label} | {LABEL[ckpt]} | {'; '.join(tests)} | "
                     f"{above} of {total} |")
    return lines


def floor_table(root: Path, studies: dict[str, CrossvalResult], setting: str) -> list[str]:
    lines = list(FLOOR_HEADER)
    seen = set()
    for name, s in studies.items():
        floor = darkness_per_image(root / name)
        for role, label in roles(name, s):
            if label not in seen:  # a teacher folder is also every student folder's teacher
                seen.add(label)
                lines += floor_rows(setting, label, s, role, floor)
    return lines


def own_map_tables(root: Path, studies: dict[str, CrossvalResult],
                   setting: str) -> tuple[list[str], list[str]]:
    """Each folder's own map (a pipeline's student, or the model), labelled by the folder: against
    its teacher (pipelines only), and against the darkness map image by image."""
    students, floors_ = list(STUDENT_HEADER), list(FLOOR_HEADER)
    for name, s in studies.items():
        if s.pipeline:
            students += student_rows(setting, name, s)
        floors_ += floor_rows(setting, name, s, "student" if s.pipeline else "model",
                              darkness_per_image(root / name))
    return students, floors_


def selection_table(studies: dict[str, CrossvalResult], setting: str) -> list[str]:
    lines = ["| setting | model | B-LOC | B-CL | last | B-LOC worse than last on test | B-LOC − last "
             "(mean over runs) |", "|---|---|---|---|---|---|---|"]
    for name, s in studies.items():
        if s.pipeline or "last" not in s.runs[0].model:
            continue
        cells = [mean_std(s.fold_means("model", c)) for c in (*SELECTED, "last")]
        diff = [r.model["best-loc"].pxap - r.model["last"].pxap for r in s.runs]
        worse = sum(d < 0 for d in diff)
        lines.append(f"| {setting} | {name} | " + " | ".join(cells)
                     + f" | {worse} of {len(diff)} | {statistics.mean(diff):+.1f} |")
    return lines


def class_table(studies: dict[str, CrossvalResult]) -> list[str]:
    lines = ["| model | selection | class | PxAP | chance | mean image AP | mean foreground % |",
             "|---|---|---|---|---|---|---|"]
    seen = set()
    for name, s in studies.items():
        for role, label in roles(name, s):
            if label in seen:
                continue
            seen.add(label)
            for ckpt in SELECTED:
                for cls in s.runs[0].role(role)[ckpt].per_class:
                    cell = {k: [getattr(r.role(role)[ckpt].per_class[cls], k) for r in s.runs]
                            for k in ("pxap", "chance", "mean_image_ap", "mean_fg_fraction")}
                    lines.append(f"| {label} | {LABEL[ckpt]} | {cls} | {mean_std(cell['pxap'])} | "
                                 f"{statistics.mean(cell['chance']):.1f} | "
                                 f"{mean_std(cell['mean_image_ap'])} | "
                                 f"{statistics.mean(cell['mean_fg_fraction']):.1f} |")
    return lines


def validation_table(root: Path, studies: dict[str, CrossvalResult], setting: str) -> list[str]:
    lines = ["| setting | folder | run | best valpx PxAP (B-LOC criterion) | best valcl accuracy "
             "(B-CL criterion) | runs |", "|---|---|---|---|---|---|"]
    for name, s in studies.items():
        by_run: dict[str, dict[int, list[tuple[float, float]]]] = {}
        for fold_run in s.runs:
            folder = CrossvalDir(root / name).fold(fold_run.fold, fold_run.seed)
            for label, values in criteria(folder).items():
                by_run.setdefault(label, {}).setdefault(fold_run.fold, []).append(values)
        for label, folds in by_run.items():
            px = [statistics.mean(v[0] for v in runs) for runs in folds.values()]
            cl = [statistics.mean(v[1] for v in runs) for runs in folds.values()]
            n = sum(len(runs) for runs in folds.values())
            lines.append(f"| {setting} | {name} | {label} | {mean_std(px)} | {mean_std(cl)} | "
                         f"{n} |")
    return lines


def per_image_rows(folder: Path) -> list:
    """Per-image rows with an AP of the B-LOC test evaluations of a cross-validation folder (of
    its model, or of a pipeline's last run: the student)."""
    results = [runs_in(run)[-1].read_evaluation("best-loc") for run in CrossvalDir(folder).folds()]
    return [r for result in results if result is not None for r in result.per_image
            if r.ap is not None and r.ap == r.ap]


def scatter(root: Path, studies: dict[str, CrossvalResult], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # teachers in the first row, the students trained on them in the second
    grid = [[(n, s) for n, s in studies.items() if not s.pipeline][:4],
            [(n, s) for n, s in studies.items() if s.pipeline][:4]]
    grid = [row for row in grid if row]
    width = max(len(row) for row in grid)
    fig, axes = plt.subplots(len(grid), width, figsize=(4.2 * width, 4 * len(grid)), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (name, study) in ((axes[i][j], panel) for i, row in enumerate(grid)
                              for j, panel in enumerate(row)):
        ax.set_visible(True)
        rows = per_image_rows(root / name)
        for label, colour in ((0, "tab:blue"), (1, "tab:red")):
            mine = [r for r in rows if r.label == label]
            ax.scatter([100 * r.fg_fraction for r in mine], [r.ap for r in mine], s=9, alpha=0.6,
                       color=colour,
                       label=("benign" if label == 0 else "malignant") + f" (n = {len(mine)})")
        ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--", label="chance (AP = FG %)")
        ax.set(title=f"{roles(name, study)[-1][1]}, B-LOC", xlabel="foreground % of the image",
               ylabel="per-image AP", xlim=(0, 100), ylim=(0, 100))
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path, help="folder of crossval folders (runs/cv)")
    parser.add_argument("--figure", type=Path, help="write the per-image AP scatter here")
    args = parser.parse_args()
    ours, paper, levers = load(args.root), load(args.root / "paper"), load(args.root / "levers")
    rounds = load(args.root / "rounds")  # PixelCAM whose teacher is an earlier round's student
    if not ours:
        raise SystemExit(f"{args.root}: no cross-validation folder (run histocam crossval first)")
    some = next(iter(ours.values()))
    seeds = "; ".join(f"{name} {','.join(map(str, s.seeds))}"
                      for name, s in {**ours, **{f"paper/{k}": v for k, v in paper.items()}}.items())
    print(f"GlaS, {some.folds} patient-disjoint folds of the 85 train images; PxAP per fold = mean "
          f"over seeds. Seeds: {seeds}.\n")
    out = model_table(ours, "histocam")
    if paper:
        out += model_table(paper, "paper")[2:]
    out += model_table(rounds, "histocam, next round")[2:]
    print("\n".join(out))
    print("\nStudent − teacher (paired t-test over every image, one per seed):\n")
    lever_students, lever_floors = own_map_tables(args.root / "levers", levers, "histocam + lever")
    round_students, round_floors = own_map_tables(args.root / "rounds", rounds,
                                                  "histocam, next round")
    print("\n".join(student_table(ours, "histocam")
                     + (student_table(paper, "paper")[2:] if paper else []) + lever_students[2:]
                     + round_students[2:]))
    print("\nCheckpoint choice on the test folds (reported, never used to choose):\n")
    print("\n".join(selection_table(ours, "histocam")
                     + (selection_table(paper, "paper")[2:] if paper else [])))
    if levers:
        print("\nLevers, each beside the folder it changes, on the folds and seeds both ran "
              "(chosen on valpx only):\n")
        print("\n".join(lever_table(args.root, ours, levers)))
    print("\nAgainst the colour floor, image by image (paired t-test on the same test images):\n")
    out = floor_table(args.root, ours, "histocam")
    if paper:
        out += floor_table(args.root / "paper", paper, "paper")[2:]
    print("\n".join(out + lever_floors[2:] + round_floors[2:]))
    print("\nPer class (over all runs):\n")
    print("\n".join(class_table(ours)))
    print("\nValidation only (what the recipe is chosen on):\n")
    out = validation_table(args.root, ours, "histocam")
    if paper:
        out += validation_table(args.root / "paper", paper, "paper")[2:]
    if levers:
        out += validation_table(args.root / "levers", levers, "histocam + lever")[2:]
    out += validation_table(args.root / "rounds", rounds, "histocam, next round")[2:]
    print("\n".join(out))
    if args.figure:
        scatter(args.root, ours, args.figure)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
