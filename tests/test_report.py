"""The HTML report (``histocam report``) and the robustness experiments, on two tiny real runs.

The browser test opens the report in headless Chromium (Debian's ``chromium`` + ``chromedriver``,
driven by selenium) and skips, saying why, when they are not installed.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_run
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core.devices import one_cpu_thread
from histocam.core.results import PerImageRow
from histocam.experiments.stain_shift import RestainedDataset, StainShift, run_stain_shift
from histocam.experiments.thresholds import sensitivity
from histocam.experiments.tsne import run_tsne
from histocam.metrics.histogram import PixelHistogram
from histocam.metrics.localization import ThresholdCurves
from histocam.metrics.protocol import Batch
from histocam.report.gallery import _computed_maps, _stored_maps, pick
from histocam.report.load import load_results
from histocam.runs import Run
from histocam.train import RunConfig, Trainer
from histocam.train.seeding import set_deterministic

EVIL = "<img src=x onerror=alert(1)>"


def tiny_config(out: Path, name: str, seed: int) -> RunConfig:
    # eval_size 96: a 3×3 feature grid for the t-SNE (the test backbone has stride 32)
    return RunConfig.model_validate(tiny_run(
        out, name=name, seed=seed, deterministic=True,
        data={"eval_size": 96, "synthetic": {"n_test": 6}}, train={"lr": 0.05}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict]:
    """Two trained, evaluated runs (one named with HTML), the experiments on the first, the report."""
    root = tmp_path_factory.mktemp("report")
    dirs = []
    with one_cpu_thread():
        for name, seed in (("plain", 0), (EVIL, 1)):
            cfg = tiny_config(root / "runs", name, seed)
            Trainer(cfg).fit()
            dirs.append(cfg.run_dir)
        set_deterministic(False)
        plain, evil = Run(dirs[0]), Run(dirs[1])
        for ckpt in ("best-loc", "best-cl"):  # the first with stored maps and J, the other without
            plain.evaluate(ckpt, device="cpu", save_maps=True, separability=True)
            evil.evaluate(ckpt, device="cpu")
        plain.evaluate("best-loc", device="cpu", data="synthetic-node")  # out of distribution
        run_stain_shift(plain.dir, max_strength=0.4, n_levels=2, device="cpu")
        run_tsne(plain.dir, n_images=2, device="cpu")
        result = CliRunner().invoke(app, ["thresholds", str(plain.dir), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        out = root / "report.html"
        result = CliRunner().invoke(app, ["report", str(plain.dir), str(evil.dir), "--out",
                                          str(out), "--gallery", "2"])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"report: {out}"  # the stage lines go to stderr
    yield {"plain": plain, "evil": evil, "report": out, "html": out.read_text()}


class Collector(HTMLParser):
    """Images, table rows by table id, scripts and links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images, self.scripts, self.hrefs, self.tags = [], 0, [], []
        self.rows: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "a":
            self.hrefs.append(a.get("href", ""))
        elif tag == "table":
            self._table = a.get("id", "")
            self.rows.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.rows[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.rows[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Collector:
    c = Collector()
    c.feed(text)
    return c


@pytest.mark.slow
def test_report_is_self_contained_and_escapes_names(runs) -> None:
    page = parse(runs["html"])
    assert page.scripts == 0 and "img" in page.tags and page.images
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
               for src in page.images)
    assert all(h.startswith("#") for h in page.hrefs)  # in-page links only: no network
    assert "Content-Security-Policy" in runs["html"] and "default-src 'none'" in runs["html"]
    # the run named with HTML shows as text, in the heading, the table and its directory
    assert EVIL not in runs["html"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in runs["html"]
    assert runs["html"].count("&lt;img src=x onerror=alert(1)&gt;") >= 4
    assert runs["report"].stat().st_size < 5_000_000


@pytest.mark.slow
def test_comparison_table_and_paired_tests_match_stored_scores(runs) -> None:
    page = parse(runs["html"])
    rows = page.rows["comparison"][1:]
    assert [(r[0], r[2]) for r in rows] == [("plain", "B-LOC"), ("plain", "B-CL"),
                                           (EVIL, "B-LOC"), (EVIL, "B-CL")]
    assert page.rows["comparison"][0][3:7] == ["CL", "CL chance", "PxAP", "PxAP chance"]
    stored = json.loads((runs["plain"].dir.root / "metrics" / "best-loc-test.json").read_text())
    cl = stored["classification"]
    rows_true = [sum(r) for r in cl["confusion_matrix"]]
    assert rows[0][3].removesuffix(" ⚠") == f"{cl['accuracy']:.1f}"
    assert rows[0][4] == f"{100 * max(rows_true) / sum(rows_true):.1f}"  # the majority class
    assert rows[0][5] == f"{stored['localization']['pxap']:.1f}"
    assert rows[0][6] == f"{stored['localization']['chance']:.1f}"
    assert rows[0][-1] == f"{stored['separability']['mean']:.3f}" and rows[2][-1] == "n/a"

    def ap(run: Run) -> dict[str, float]:
        with (run.dir.root / "metrics" / "best-loc-test-per-image.csv").open() as fh:
            return {r["id"]: float(r["ap"]) for r in csv.DictReader(fh)}

    a, b = ap(runs["plain"]), ap(runs["evil"])
    shared = [i for i in a if not (math.isnan(a[i]) or math.isnan(b[i]))]
    diffs = np.array([b[i] - a[i] for i in shared])
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(len(diffs)))  # the paired t, by hand
    test = page.rows["paired-tests"][1]
    assert test[:4] == ["B-LOC", "plain", EVIL, str(len(shared))]
    assert float(test[4]) == pytest.approx(diffs.mean(), abs=0.006)
    assert float(test[5]) == pytest.approx(t, abs=0.006)


@pytest.mark.slow
def test_report_opens_in_headless_chromium(runs, tmp_path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[dev]')")
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(runs["report"].as_uri())
        state = driver.execute_script(
            "return {ready: document.readyState, images: Array.from(document.images).map("
            "i => [i.complete, i.naturalWidth]), rows: document.querySelectorAll("
            "'#comparison tbody tr').length, text: document.body.innerText}")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 (the HTML in the run name never ran)
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    assert errors == []
    assert state["ready"] == "complete"
    assert len(state["images"]) == len(parse(runs["html"]).images) > 5
    assert all(complete and width > 0 for complete, width in state["images"])
    assert state["rows"] == 4  # 2 runs × (B-LOC, B-CL)
    assert EVIL in state["text"]  # shown as text
    from PIL import Image

    with Image.open(screenshot) as shot:
        assert shot.size[0] > 0 and shot.size[1] > 0


@pytest.mark.slow
def test_out_of_distribution_evaluation_is_listed(runs) -> None:
    page = parse(runs["html"])
    rows = [r for table_rows in page.rows.values() for r in table_rows
            if r and r[0] == "plain" and len(r) == 7]
    tag = next(p.name for p in (runs["plain"].dir.root / "metrics").iterdir() if p.is_dir())
    stored = json.loads((runs["plain"].dir.root / "metrics" / tag / "best-loc-test.json").read_text())
    assert tag.startswith("synthetic-node-")
    assert rows == [["plain", tag, "synthetic-node", "B-LOC",
                     f"{stored['classification']['accuracy']:.1f}",
                     f"{stored['localization']['pxap']:.1f}",
                     f"{stored['localization']['chance']:.1f}"]]  # PxAP beside its chance


@pytest.mark.slow
def test_stain_shift_level_zero_is_the_plain_evaluation(runs) -> None:
    plain = runs["plain"]
    shift = json.loads((plain.dir.root / "metrics" / "stain-shift.json").read_text())
    assert shift["levels"] == [0, 1, 2] and shift["strengths"] == pytest.approx([0, 0.2, 0.4])
    for ckpt in ("best-loc", "best-cl"):
        stored = json.loads((plain.dir.root / "metrics" / f"{ckpt}-test.json").read_text())
        got = shift["checkpoints"][ckpt]
        assert got["pxap"][0] == pytest.approx(stored["localization"]["pxap"], abs=1e-9)
        assert got["accuracy"][0] == stored["classification"]["accuracy"]
        assert got["chance"] == pytest.approx([stored["localization"]["chance"]] * 3)
    assert "Stain shift" in runs["html"]


def test_restaining_matches_the_optical_density_formula() -> None:
    shift = StainShift.from_seed(3)
    assert shift.a[2] == 0 and shift.b[2] == 0 and all(0.5 <= abs(v) <= 1 for v in shift.a[:2])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert shift.apply(image, 0.0) is image
    # independent numpy reference of C' = (1 + s a) C + s b in OD space (Ruifrok & Johnston)
    m = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    s = 0.3
    od = -np.log((image.astype(np.float64) + 1.0) / 256.0)  # 255·(x/255) + 1
    conc = od.reshape(-1, 3) @ np.linalg.inv(m)
    conc = conc * (1 + s * np.array(shift.a)) + s * np.array(shift.b)
    rgb = (np.exp(-(conc @ m)) * 256.0 - 1.0) / 255.0
    want = np.round(np.clip(rgb, 0, 1) * 255).reshape(5, 7, 3)
    got = shift.apply(image, s)
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - want).max() <= 1
    assert np.abs(got.astype(int) - image).mean() > 5  # a visible shift


@pytest.mark.slow
def test_restained_dataset_keeps_masks_labels_and_ids(runs) -> None:
    from histocam.data.open import open_source

    dataset = open_source(runs["plain"].config.data).dataset("test")
    shifted = RestainedDataset(dataset, StainShift.from_seed(0), 0.5)
    assert shifted.ids == dataset.ids and len(shifted) == len(dataset)
    a, b = dataset[1], shifted[1]
    assert b.label == a.label and b.id == a.id and np.array_equal(b.mask, a.mask)
    assert b.image.shape == a.image.shape and not np.array_equal(b.image, a.image)


def test_threshold_shares_equal_a_pixel_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 5, 7, generator=gen)
    masks = torch.rand(3, 5, 7, generator=gen) > 0.6
    hist = PixelHistogram()
    hist.update(Batch(maps=maps, masks=masks))
    n_fg, n_bg = int(masks.sum()), int((~masks).sum())
    got = sensitivity(ThresholdCurves.of(hist), n_fg, n_bg, pxap=50.0, tau_star=0.3, step=1)
    for i in (0, 137, 500, 731, 999):
        tau = got.thresholds[i]
        above = maps >= tau
        assert got.share_all[i] == pytest.approx(100 * float(above.double().mean()), abs=1e-9)
        assert got.share_fg[i] == pytest.approx(100 * float(above[masks].double().mean()))
        assert got.share_bg[i] == pytest.approx(100 * float(above[~masks].double().mean()))
    assert got.share_all_at_half == pytest.approx(100 * float((maps >= 0.5).double().mean()))
    assert got.share_all_at_tau_star == pytest.approx(100 * float((maps >= 0.3).double().mean()))
    with pytest.raises(ValueError, match="no annotated pixels"):
        sensitivity(ThresholdCurves.of(hist), 0, 0, pxap=50.0, tau_star=None)


@pytest.mark.slow
def test_thresholds_json_matches_the_stored_curves(runs) -> None:
    plain = runs["plain"]
    data = json.loads((plain.dir.root / "metrics" / "thresholds.json").read_text())
    stored = json.loads((plain.dir.root / "metrics" / "best-loc-test.json").read_text())["localization"]
    got = data["checkpoints"]["best-loc"]
    assert got["pxap"] == stored["pxap"] and got["tau_star"] == stored["tau_star_valpx"]
    assert len(got["thresholds"]) == 100 and got["share_all"][0] == pytest.approx(100.0)
    maps = np.load(plain.dir.root / "metrics" / "best-loc-test-maps.npz")
    share = 100 * np.mean(np.concatenate([maps[k].astype(np.float32).ravel() >= 0.5
                                          for k in maps.files]))
    assert got["share_all_at_0.5"] == pytest.approx(share, abs=0.5)  # maps stored in float16


@pytest.mark.slow
def test_tsne_points_and_separability(runs) -> None:
    plain = runs["plain"]
    data = json.loads((plain.dir.root / "metrics" / "tsne.json").read_text())
    stored = json.loads((plain.dir.root / "metrics" / "best-loc-test.json").read_text())
    assert data["separability"]["mean"] == pytest.approx(stored["separability"]["mean"], rel=1e-9)
    assert data["images"], "no test image with both regions on a 3×3 grid"
    for item in data["images"]:
        points = np.array(item["points"])
        assert points.shape == (9, 2) and np.isfinite(points).all()
        assert len(item["fg"]) == 9 and 0 < sum(item["fg"]) < 9 and item["j"] > 0
    assert "t-SNE of FG/BG pixel features" in runs["html"]


def test_gallery_picks_best_worst_random_once() -> None:
    def row(image_id: str, ap: float, iou_bg: float) -> PerImageRow:
        return PerImageRow(id=image_id, label=1, prediction=1, confidence=0.9, ap=ap,
                           iou_bg=iou_bg)

    rows = [row(f"i{k}", ap, 1.0)
            for k, ap in enumerate([50.0, 90.0, 10.0, float("nan"), 70.0, 30.0, 60.0])]
    chosen = pick(rows, 2)
    kinds = [(kind, r.id) for kind, r, _ in chosen]
    assert kinds[:4] == [("best", "i1"), ("best", "i4"), ("worst", "i2"), ("worst", "i5")]
    assert [k for k, _ in kinds[4:]] == ["random", "random"]
    ids = [i for _, i in kinds]
    assert len(set(ids)) == 6 and "i3" not in ids  # each once; NaN AP never shown
    negative = [row(f"n{k}", float("nan"), v) for k, v in enumerate([5.0, 9.0])]
    assert [(k, r.id, key) for k, r, key in pick(negative, 1)] == [("best", "n1", "iou_bg"),
                                                                   ("worst", "n0", "iou_bg")]


@pytest.mark.slow
def test_gallery_maps_from_the_checkpoint_equal_the_stored_ones(runs) -> None:
    from histocam.data.open import open_source
    from histocam.data.transforms import JointTransform

    results = load_results(runs["plain"].dir)
    ckpt = results.test["best-loc"]
    dataset = open_source(results.run.config.data).dataset("test")
    transform = JointTransform.from_config(results.run.config.data, train=False)
    items = [transform(dataset[i]) for i in (0, 3, 5)]
    stored = _stored_maps(ckpt, [it["id"] for it in items])
    computed = _computed_maps(results, "best-loc", items, "cpu", {})
    assert stored is not None and len(stored) == 3
    for s, c in zip(stored, computed):
        assert s.shape == c.shape == (96, 96)
        np.testing.assert_allclose(s, c, atol=2e-3)  # stored as float16


def test_report_user_errors(tmp_path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "--out",
                                      str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'missing'}: no such run directory"
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "holds no runs" in result.output
    result = CliRunner().invoke(app, ["stain-shift", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a run directory" in result.output
    result = CliRunner().invoke(app, ["tsne", str(tmp_path / "empty"), "--checkpoint", "both"])
    assert result.output.strip() == "error: --checkpoint 'both': expected best-loc or best-cl"
    result = CliRunner().invoke(app, ["stain-shift", str(tmp_path / "empty"), "--checkpoint", "x"])
    assert result.output.strip() == "error: --checkpoint 'x': expected best-loc, best-cl or both"


def test_training_curves_draw_a_parts_reference_dashed_in_its_colour(monkeypatch) -> None:
    import histocam.report.figures as figures
    from histocam.report.load import RunResults

    drawn = []
    monkeypatch.setattr(figures, "figure_uri", lambda fig: drawn.append(fig) or "data:")
    log = [{"epoch": str(e), "train_loss": "1.5", "train_pixel": f"{7.5 - 0.2 * e}",
            "train_pixel_chance": "6.93", "valcl_accuracy": "90", "valpx_pxap": "50",
            "selected": "B-LOC+B-CL" if e == 2 else ""} for e in (1, 2, 3)]
    assert figures.training_curves(RunResults(run=None, config_text="", log=log)) == "data:"
    lines = {line.get_label(): line for line in drawn[0].axes[0].get_lines()}
    pixel, chance = lines["pixel"], lines["pixel_chance"]
    assert chance.get_color() == pixel.get_color() != lines["loss"].get_color()
    assert pixel.get_linestyle() == "-" and chance.get_linestyle() == "--"
    assert list(chance.get_ydata()) == [6.93] * 3


@pytest.mark.slow
def test_report_has_contents_collapsible_parts_and_gallery_headers(runs) -> None:
    import re

    html = runs["html"]
    page = parse(html)
    ids = set(re.findall(r'id="([^"]+)"', html))
    toc = html[html.index('<nav class="toc">'):html.index("</nav>")]
    links = re.findall(r'href="#([^"]+)"', toc)
    assert links[:2] == ["comparison", "paired-tests"] and "run-0" in links and "run-1" in links
    assert "run-0-gallery" in links and "run-0-test" in links
    assert set(links) <= ids  # every entry leads somewhere
    parts = [link for link in links if not re.fullmatch(r"run-\d+", link)]  # not a run's heading
    assert html.count('<details class="section"') == len(parts)  # each part folds
    # galleries: one per class of each run, headed by block and panel
    assert html.count('<table class="gallery">') == 4  # 2 runs × 2 classes
    assert '<th class="kind" colspan="3">best (AP)</th>' in html
    assert "<th>image</th><th>map</th><th>region ≥ τ*</th>" in html
    text = re.sub(r"<pre>.*?</pre>", "", html, flags=re.S)
    assert "`" not in text and "<code>histocam evaluate RUN --data OTHER</code>" in text
    assert "differences are run b − run a" in html  # the sign, in the header and the tests
    for run in (runs["plain"], runs["evil"]):  # a checkpoint near chance is flagged, by name
        for ckpt, label in (("best-loc", "B-LOC"), ("best-cl", "B-CL")):
            cl = json.loads(run.dir.evaluation(ckpt).json.read_text())["classification"]
            counts = [sum(r) for r in cl["confusion_matrix"]]
            near = cl["accuracy"] < 100 * max(counts) / sum(counts) + 10
            flag = f"the {label} checkpoint classifies near chance (CL {cl['accuracy']:.1f} on test"
            assert (flag in html) == near, (run.dir, ckpt)
    assert page.rows["paired-tests"][0][4] == "mean b − a"


def test_a_teacher_is_listed_before_its_students() -> None:
    """So that every paired difference between them is student − teacher, as pipelines print it."""
    from types import SimpleNamespace

    from histocam.report.compare import teachers_first

    def result(root: str, teacher: str | None = None):
        return SimpleNamespace(run=SimpleNamespace(dir=SimpleNamespace(root=Path(root))),
                               teacher_dir=Path(teacher) if teacher else None, name=root)

    other, student, teacher = result("/r/other"), result("/r/pix", "/r/cam"), result("/r/cam")
    second = result("/r/negev", "/r/cam")
    ordered = teachers_first([other, student, second, teacher])
    assert [r.name for r in ordered] == ["/r/other", "/r/cam", "/r/pix", "/r/negev"]
    alone = result("/r/pix2", "/r/absent")  # a teacher not in the report: order unchanged
    assert teachers_first([alone, other]) == [alone, other]


def test_outline_shows_every_mask_even_one_that_is_all_foreground() -> None:
    from histocam.core.visual import outline

    white = np.full((8, 10, 3), 255, np.uint8)
    framed = outline(white, np.ones((8, 10), bool))
    ring = np.ones((8, 10), bool)
    ring[2:-2, 2:-2] = False
    assert np.array_equal((framed == (255, 0, 255)).all(-1), ring)  # 2 px, along the edges
    assert (framed[2:-2, 2:-2] == 255).all()
    assert np.array_equal(outline(white, np.zeros((8, 10), bool)), white)
    square = np.zeros((8, 10), bool)
    square[2:6, 3:8] = True
    drawn = outline(white, square, width=1)
    inner = square.copy()
    inner[3:5, 4:7] = False
    assert np.array_equal((drawn == (255, 0, 255)).all(-1), inner)
    black = (drawn == 0).all(-1)  # one pixel outside, 4-connected: no corners
    assert black.sum() == 18 and black[1, 3:8].all() and black[2:6, 2].all() and not black[1, 2]
