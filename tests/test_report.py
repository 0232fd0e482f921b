"""The HTML report: every section from a small but genuine run directory, embedded PNGs, no
external references, "not run" notes, and a headless-Chromium rendering when Chromium exists."""

from __future__ import annotations

import base64
import csv
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import write_tiny_cohort
from metsynth.errors import InputError
from metsynth.fileio import write_json
from metsynth.layout import RunLayout
from metsynth.report import write_report
from metsynth.report.page import fmt, fmt_p, fmt_seconds
from metsynth.volume import Volume

MODELS = ("real", "synthetic", "harmonized_ft", "size_100")
SECTIONS = ("summary", "tables", "boxplots", "examples", "qc", "realism", "statistics", "config")


# ------------------------------------------------------------------------------------ builders
def _cube(shape, lo, size=4) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = 1
    return m


def _raw_cohort(root: Path) -> Path:
    """Tiny cohort: H00 healthy, M01-M02 metastatic, M03 test with four operators' masks."""
    manifest = write_tiny_cohort(root, n_healthy=1, n_metastatic=3)
    data = yaml.safe_load(manifest.read_text())
    case = data["cases"][-1]
    case["role"] = "test"
    case["centre"] = "B"
    ref = Volume.read(root / case["lesion_masks"][0]["path"])
    ops = [("A", 1, "novice", (10, 12, 14)), ("A", 2, "novice", (10, 13, 14)), ("B", 1, "novice", (11, 12, 15)),
           ("C", 1, "expert", (10, 12, 15))]
    for name, rnd, level, lo in ops:
        path = f"lesions/{case['id']}_{name}{rnd}.nii.gz"
        ref.with_array(_cube(ref.shape, lo)).write(root / path)
        case["lesion_masks"].append({"path": path, "annotator": name, "round": rnd, "expertise": level})
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    return manifest


def _predictions(layout: RunLayout, cohort) -> None:
    """Each model's prediction: the truth shifted by a model-dependent offset; Real misses M01."""
    shifts = {"real": 2, "synthetic": 1, "harmonized_ft": 0, "size_100": 2}
    for model, shift in shifts.items():
        for case in cohort.by_role("metastatic", "test"):
            truth = Volume.read(case.reference_lesion().path)
            pred = np.roll(truth.array, shift, axis=2)
            if model == "real" and case.id == "M01":
                pred = np.zeros_like(pred)  # an undefined distance, filled with the worst case
            if model == "harmonized_ft" and case.id == "M02":
                pred = np.roll(pred, 1, axis=1)
            truth.with_array(pred.astype(np.uint8)).write(layout.predictions(model) / f"{case.id}.nii.gz")


def _synthetic_sets(layout: RunLayout, cohort) -> None:
    """A two-volume synthetic set with its stored preview, and a harmonized set without one."""
    from metsynth.viz import montage, volume_slices

    healthy = Volume.read(cohort.by_role("healthy")[0].image)
    rows = []
    for d in ("images", "labels", "sidecars"):
        (layout.synthetic / d).mkdir(parents=True, exist_ok=True)
        (layout.harmonized / d).mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate([(8, 6, 8), (12, 8, 10)]):
        vid = f"H00__M01-L1__r{i}"
        label = _cube(healthy.shape, lo, 5)
        image = healthy.array.astype(np.float32).copy()
        image[label > 0] = -0.2
        healthy.with_array(image).write(layout.synthetic / "images" / f"{vid}.nii.gz")
        healthy.with_array(label).write(layout.synthetic / "labels" / f"{vid}.nii.gz")
        rows.append({"volume_id": vid, "healthy_case": "H00", "kept": "true", "reason": "", "lesion_mm3": "125.0",
                     "region": "shaft", "image": f"images/{vid}.nii.gz", "label": f"labels/{vid}.nii.gz"})
        harmonized = healthy.with_array((image * 0.9).astype(np.float32))
        harmonized.write(layout.harmonized / "images" / f"{vid}.nii.gz")
        healthy.with_array(label).write(layout.harmonized / "labels" / f"{vid}.nii.gz")
        write_json(layout.harmonized / "sidecars" / f"{vid}.json", {
            "volume_id": vid, "image": f"images/{vid}.nii.gz", "label": f"labels/{vid}.nii.gz",
            "harmonization": {"source_image": str(layout.synthetic / "images" / f"{vid}.nii.gz"),
                              "checkpoint": str(layout.diffusion / "model.pt"), "checkpoint_sha256": "ab12" * 16,
                              "start_timestep": 10, "ddim_steps": 50, "region": "lesion", "timesteps": [10, 5]}})
    rows.append({"volume_id": "H00__M02-L1__r0", "healthy_case": "H00", "kept": "false", "reason": "too small",
                 "lesion_mm3": "", "region": "", "image": "", "label": ""})
    with open(layout.synthetic / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tiles = volume_slices(healthy, None, {"label": (healthy.with_array(_cube(healthy.shape, (8, 6, 8), 5)), "red")})
    montage([[tiles["axial"], tiles["coronal"]]], layout.synthetic / "preview.png", cell_px=96)


def _training_sets(layout: RunLayout) -> None:
    """The synthetic model's folds: each trained on one of the two kept volumes, the other dropped
    by the leakage filter (as ``metsynth train`` writes ``training_set.json``)."""
    for fold, vid in enumerate(["H00__M01-L1__r0", "H00__M01-L1__r1"]):
        volume = {"key": f"synthetic/{vid}", "source": "synthetic", "image": f"images/{vid}.nii.gz",
                  "label": f"labels/{vid}.nii.gz", "case": vid, "donor_case": "M01", "healthy_case": "H00"}
        write_json(layout.model_dir("synthetic", fold) / "training_set.json",
                   {"sources": ["synthetic"], "train": [volume], "val": [], "fold": fold, "test_cases": ["M02"],
                    "dropped_leaking": 1, "limit": None, "counts": {"synthetic": 1}})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from metsynth.cohort import load_cohort
    from metsynth.evaluation.evaluate import evaluate_cohort
    from metsynth.prepare import PrepareConfig, prepare_cohort

    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "run"
    layout = RunLayout(root)
    raw = _raw_cohort(tmp / "raw")
    prepare_cohort(load_cohort(raw), layout.prepared, PrepareConfig(spacing=1.0), progress=False)
    cohort = load_cohort(layout.prepared_manifest)
    _predictions(layout, cohort)
    for model in MODELS:
        evaluate_cohort(layout.predictions(model), cohort).write(layout.evaluation(model))
    _synthetic_sets(layout, cohort)
    _training_sets(layout)
    for stage, seconds in (("prepare", 1.5), ("synthesize", 75.0), ("evaluate", 4000.0)):
        write_json(layout.stages / f"{stage}.json", {"stage": stage, "fingerprint": "0123456789abcdef", "inputs": {},
                                                     "seconds": seconds, "finished": "2024-05-01T10:00:00"})
    layout.config.write_text(yaml.safe_dump({"name": "tiny-report", "seed": 0, "prepare": {"spacing": 1.0}}))
    return root


# ------------------------------------------------------------------------------------ parsing
class Page(HTMLParser):
    """Collects sections, images, table rows (header cell + cells) and classes of divs."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.rows: list[list[str]] = []
        self.tables: list[list[list[str]]] = []
        self.classes: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and not (a[key].startswith("data:") or a[key].startswith("#")):
                self.external.append(a[key])
        if tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "img":
            self.images.append(a)
        elif tag == "div" and a.get("class"):
            self.classes.append(a["class"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            if self.tables:
                self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, parse_text(text)


def parse_text(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def rows_by_label(table: list[list[str]]) -> dict[str, list[str]]:
    return {r[0]: r for r in table if r}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def section_html(text: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}".*?</section>', text, re.S)
    assert m, section_id
    return m.group(0)


# ------------------------------------------------------------------------------------ tests
def test_report_of_a_run_has_every_section_table_and_picture(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report" / "index.html"
    text, page = parse(path)

    assert page.sections == list(SECTIONS)
    assert "error" not in page.classes, "a section failed to build"
    for sid in ("tables", "boxplots", "examples", "qc", "statistics", "config"):
        assert "Not run" not in section_html(text, sid) or sid == "qc", sid
    assert "Training curves" in text and section_html(text, "qc").count("Not run") == 1  # only the curves

    # self-contained: no external references, no scripts, every picture an embedded PNG
    assert not re.search(r"https?://", text)
    assert not page.external
    assert "<script" not in text and "<link" not in text
    assert len(page.images) >= 5  # 2 box-plot figures, Figure 5, synthesis and harmonization QC
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        w, h = png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert w > 50 and h > 50
    alts = {img["alt"] for img in page.images}
    assert {"segmentation examples", "synthesis QC", "harmonization QC"} <= alts

    # Table 3: the evaluated paper models; Dice formatted like the paper, from the metrics files
    import pandas as pd

    tables = section_html(text, "tables")
    table3, table2, table1 = parse_text(tables).tables[:3]
    labels = rows_by_label(table3)
    assert set(labels) == {"Training set", "Real (ref.)", "Synthetic", "Diffusion+FT"}
    for model, label in (("real", "Real (ref.)"), ("harmonized_ft", "Diffusion+FT")):
        dice = pd.read_csv(run_dir / "evaluation" / model / "metrics.csv")["dice"]
        assert labels[label][1].startswith(f"{dice.mean():.2f} ± {dice.std(ddof=1):.2f}")
    best = re.search(r"<th>Diffusion\+FT</th><td><b>([0-9.]+)</b>", tables)
    assert best, "the best Dice is bold"
    # Table 2: the size study with the synthetic model as the full set, labelled with what each fold
    # trained on (its training_set.json files), against the smallest set
    assert set(rows_by_label(table2)) == {"Training set size", "100 (ref.)", "all (1 per fold)"}
    # Table 1 computed from the cohort's operators, Diffusion+FT as the automatic model
    assert "Mean Dice" in rows_by_label(table1)
    assert "Novice/Novice" in tables and "Novice/Expert" in tables and "vs Novices" in tables
    assert "Automatic: Diffusion+FT predictions" in tables
    # statistics and detection
    stats = section_html(text, "statistics")
    assert "Kruskal-Wallis" in stats and "Each model against Real" in stats and "true lesions" in stats
    # detection by location (the cohort's femur masks): every true lesion counted once, in one location
    located = rows_by_label(next(t for t in parse_text(stats).tables if t and "cortical: detected" in t[0]))
    for model, label in (("real", "Real"), ("synthetic", "Synthetic")):
        les = pd.read_csv(run_dir / "evaluation" / model / "lesions.csv")
        true = les[les["kind"] == "true"]
        assert set(true["location"]) <= {"cortical", "medullary"}
        counts = [int(c.split("/")[1].split(" ")[0]) for c in (located[label][1], located[label][3]) if c != "-"]
        assert sum(counts) == len(true) > 0
    # summary: cohort counts, stages, headline
    summary = section_html(text, "summary")
    assert "Highest mean Dice" in summary and "Diffusion+FT" in summary
    assert "1 h 07 min" in summary and "centre B" in summary
    assert "tiny-report" in text and "ab12ab12" in section_html(text, "config")



def test_report_table3_shows_each_models_difference_to_real(run_dir):
    import pandas as pd

    from metsynth.evaluation.stats import hodges_lehmann_ci
    from metsynth.report.data import RunData
    from metsynth.report.tables import table3_html

    html = table3_html(RunData(run_dir))
    rows = rows_by_label(parse_text(html).tables[0])
    real = pd.read_csv(run_dir / "evaluation" / "real" / "metrics.csv").set_index("case_id")["dice"]
    synthetic = pd.read_csv(run_dir / "evaluation" / "synthetic" / "metrics.csv").set_index("case_id")["dice"]
    # two comparisons with Real: 97.5% each; three cases cannot reach it, so the interval is unbounded
    est, lo, hi = hodges_lehmann_ci(synthetic.loc[real.index], real, confidence=1 - 0.05 / 2)
    assert (lo, hi) == (-np.inf, np.inf)
    assert f"Δ {est:+.2f} [-∞, +∞]" in rows["Synthetic"][1]
    assert all("Δ" in cell for cell in rows["Diffusion+FT"][1:]) and not any("Δ" in c for c in rows["Real (ref.)"])
    assert "Hodges-Lehmann" in html and "97.5%" in html and "Holm" in html

def test_report_of_an_empty_run_says_what_was_not_run(tmp_path):
    (tmp_path / "config.yaml").write_text("name: nothing-yet\n")
    out = write_report(tmp_path, tmp_path / "elsewhere" / "r.html")
    text, page = parse(out)
    assert page.sections == list(SECTIONS)
    assert "error" not in page.classes
    assert not page.images
    assert text.count("Not run.") >= 10
    assert "name: nothing-yet" in text
    assert not (tmp_path / "report").exists()


def test_report_uses_stored_variability_outputs(run_dir, tmp_path):
    from metsynth.cohort import load_cohort
    from metsynth.evaluation.variability import operator_variability, write_variability

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report"))
    layout = RunLayout(copy)
    # the copied manifest still points at the original run's files, which is fine for reading
    result = operator_variability(load_cohort(layout.prepared_manifest), predictions=layout.predictions("synthetic"))
    write_variability(result, layout.variability)
    layout.config.write_text("name: tiny-report\nvariability_model: synthetic\n")  # as ExperimentConfig saves it
    text, _ = parse(write_report(copy))
    tables = section_html(text, "tables")
    assert "variability/ (variability stage)" in tables and "STAPLE" in tables
    assert "Automatic: Synthetic predictions" in tables


def test_provenance_says_where_the_networks_were_trained(tmp_path, monkeypatch):
    from metsynth.devices import NUMERIC_ENV, compute_environment
    from metsynth.report.data import RunData
    from metsynth.report.sections.provenance import _trained_on

    assert _trained_on(RunData(tmp_path)) == ""  # nothing trained (or trained before the record): no table
    for name in NUMERIC_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as Lightning's deterministic mode leaves it
    forced = compute_environment("cpu", 1, "32-true")
    assert forced["env"] == {"ATEN_CPU_CAPABILITY": "avx2"}  # a variable that changes the CPU's kernels is kept
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    here = compute_environment("cpu", 1, "32-true")
    assert "env" not in here
    (tmp_path / "diffusion").mkdir()
    (tmp_path / "diffusion" / "model.yaml").write_text(yaml.safe_dump({"trained": {"environment": forced}}))
    for model in ("real", "synthetic_ft"):
        for fold in (0, 1):
            write_json(tmp_path / "models" / model / f"fold{fold}" / "result.json", {"environment": here})
    write_json(tmp_path / "models" / "online" / "fold0" / "result.json", {"steps": 3})  # before the record
    write_json(tmp_path / "models" / "size_40" / "fold0" / "result.json", {"environment": here})
    table = parse_text(_trained_on(RunData(tmp_path))).tables[0]
    rows = rows_by_label(table)
    unets_label = "Real (2 trainings), size study 40, Synthetic+FT (2 trainings)"
    assert set(rows) == {"networks", "DDPM", unets_label}
    header = rows["networks"]
    ddpm, unets = rows["DDPM"], rows[unets_label]
    assert ddpm[header.index("set in the environment")] == "ATEN_CPU_CAPABILITY=avx2"
    assert unets[header.index("set in the environment")] == "-"
    assert unets[header.index("instruction set")] == here["cpu_capability"]
    assert unets[header.index("torch")] == here["torch"] and unets[header.index("device")] == "cpu"
    # a model the study's settings no longer make is not this run's
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"models": ["real"], "size_study": []}))
    rows = rows_by_label(parse_text(_trained_on(RunData(tmp_path))).tables[0])
    assert "Real (2 trainings)" in rows and not any("Synthetic" in label or "size" in label for label in rows)


def test_write_report_checks_its_arguments(tmp_path):
    with pytest.raises(InputError, match="run directory not found"):
        write_report(tmp_path / "missing")
    with pytest.raises(InputError, match="ending in .html"):
        write_report(tmp_path, tmp_path / "report.pdf")
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(InputError, match="not a run directory"):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_number_formats_follow_the_paper():
    assert fmt(0.6549, 2) == "0.65" and fmt(72.34, 1) == "72.3" and fmt(float("nan")) == "-"
    assert fmt_p(0.0312) == "0.031" and fmt_p(0.00002) == "2.0e-05" and fmt_p(float("nan")) == "n/a"
    assert fmt_seconds(12.34) == "12.3 s" and fmt_seconds(75) == "1 min 15 s"
    assert fmt_seconds(4000) == "1 h 07 min" and fmt_seconds(119.7) == "2 min 00 s"


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    from PIL import Image

    from browser import assert_fully_rendered, render

    html = write_report(run_dir, tmp_path / "index.html")
    _, page = parse(html)
    rendering = render(html, tmp_path / "chromium")
    # what the browser decoded and laid out is what the HTML holds: every picture, every table
    assert [i["alt"] for i in rendering.images] == [i["alt"] for i in page.images]
    assert len(rendering.tables) == len(page.tables)
    assert [s["id"] for s in rendering.sections] == list(SECTIONS)
    assert_fully_rendered(rendering, min_images=len(page.images), min_tables=len(page.tables))
    pixels = np.asarray(Image.open(rendering.screenshot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1280)
    assert (pixels < 128).mean() > 0.02  # text, tables and the dark slice montages were drawn


def test_the_summary_counts_the_cases_each_fold_tests():
    """A fold of splits.json is {fold, test, train}: its size is its test cases (it read 3/3 for any two folds)."""
    from metsynth.report.sections.summary import fold_sizes

    folds = [{"fold": 0, "test": ["M1", "M2"], "train": ["M3", "M4", "M5"]},
             {"fold": 1, "test": ["M3", "M4", "M5"], "train": ["M1", "M2"]}]
    assert fold_sizes(folds) == "2/3"
