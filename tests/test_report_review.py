"""The report says what the run did: per-fold training sets, the DDIM steps run, which difference
is which, what is (not) significant, validation-free training curves, narrow pages, and the CNN's
own null control in the realism section."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from metsynth.fileio import write_json
from metsynth.layout import display_name
from metsynth.report import write_report
from metsynth.report.data import RunData
from test_report import parse_text, rows_by_label, run_dir, section_html  # noqa: F401 - run_dir is a fixture


@pytest.fixture(scope="module")
def report(run_dir) -> str:  # noqa: F811 - the fixture imported above
    return write_report(run_dir).read_text(encoding="utf-8")


def _copy(source: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("report"))
    return copy


# ------------------------------------------------------------------------------ 1, 2: Table 2
def test_full_synthetic_set_is_labelled_with_what_each_fold_trained_on(report):
    tables = section_html(report, "tables")
    table2 = parse_text(tables).tables[1]
    assert "all (1 per fold)" in rows_by_label(table2)
    assert "all (2)" not in report  # the generated count is not what a fold trained on
    assert "each fold of the Synthetic model trained on 1 of them (1 dropped by the leakage filter)" in report
    assert "Synthetic (1 synthetic per fold)" in section_html(report, "summary")
    assert "trained on 1 volumes of the 2 generated; 1 per fold were dropped by the leakage filter" in tables


def test_table_notes_are_sentences_and_the_size_study_is_tested_paired(report):
    tables = section_html(report, "tables")
    notes = " ".join(re.findall(r'<p class="tablenote">(.*?)</p>', tables, re.S))
    # the old note ran labels and counts together: "for 100 1, all (2) 2 case(s)"
    assert not re.search(r"for [^.;]*\d+ \d+, ", notes)
    assert "were set to the worst case, the field-of-view diagonal: " in notes
    assert re.search(r"\d+ cases? of Real", notes)
    # bold is the best value only, and says so
    assert "only the best value, not a test result" in notes
    # Table 2 carries the paired test against the smallest set (as stats/table2.*), not only Kruskal-Wallis
    table2 = rows_by_label(parse_text(tables).tables[1])
    assert "HL Δ" in table2["all (1 per fold)"][1]
    assert "model − 100 synthetic, paired by case" in notes
    stats = section_html(report, "statistics")
    assert "Each model against 100 synthetic" in stats


# ------------------------------------------------------------------------------ 3: DDIM steps
def test_harmonization_reports_the_ddim_steps_actually_run(report, run_dir, tmp_path):  # noqa: F811
    qc = section_html(report, "qc")
    # sidecars: start_timestep 10, ddim_steps 50, timesteps [10, 5]
    assert "DDIM from t=10: 2 steps (t = 10, 5; 50 requested over the full schedule)" in qc
    assert "50 DDIM steps" not in report
    config = section_html(report, "config")
    rows = [r for t in parse_text(config).tables for r in t if "model.pt" in r[0]]
    header = next(t[0] for t in parse_text(config).tables if "sha256 prefix" in t[0])
    assert header[1:] == ["sha256 prefix", "volumes", "start timestep", "DDIM steps run", "DDIM timesteps",
                          "DDIM steps requested"]
    assert rows[0][1:] == ["ab12ab12ab12ab12", "2", "10", "2", "10, 5", "50"]

    # an older sidecar without timesteps: computed as the harmonization computes them (T from the DDPM)
    copy = _copy(run_dir, tmp_path)
    for path in (copy / "harmonized" / "sidecars").glob("*.json"):
        data = json.loads(path.read_text())
        del data["harmonization"]["timesteps"]
        path.write_text(json.dumps(data))
    (copy / "diffusion").mkdir(exist_ok=True)
    (copy / "diffusion" / "model.yaml").write_text("noise:\n  num_train_timesteps: 200\n")
    (ck,) = RunData(copy).checkpoints()
    assert ck["timesteps"] == [10, 8, 4, 0]  # ddim_timesteps(200, 50, 10)


# ------------------------------------------------------------------------------ 4, 5: deltas, headline
def test_the_two_deltas_have_two_names(report):
    tables = section_html(report, "tables")
    stats = section_html(report, "statistics")
    assert "HL Δ" in tables and "<th>Δ</th>" not in stats
    assert stats.count("<th>Δ&nbsp;mean</th>") >= 4
    assert "HL Δ and Δ mean measure different things" in stats
    summary = section_html(report, "summary")
    assert "HL Δ Dice vs Real (paired, as Table 3)" in summary and "Δ mean" in summary
    assert "Dice vs Real</div>" not in summary


def test_headline_says_when_no_model_differs_from_real(report):
    summary = section_html(report, "summary")
    assert "Best model" not in summary
    assert "Highest mean Dice" in summary
    assert "No model differs significantly from Real in Dice" in summary and "no significant difference" in summary
    # every card names whose value it shows
    assert "HD95 ↓ (mean) · Diffusion+FT" in summary and "ASSD ↓ (mean) · Diffusion+FT" in summary


def test_headline_names_a_significant_best_model(run_dir):  # noqa: F811
    from metsynth.report.sections.summary import _headline
    from metsynth.report.tables import paper_comparison

    run = RunData(run_dir)
    comp = paper_comparison(run)
    pw = comp.pairwise.copy()
    dice = pw["metric"] == "dice"
    pw.loc[dice, ["wilcoxon_p_holm", "diff_hl"]] = [0.001, 0.2]  # every model against Real: two of them
    comp.pairwise = pw
    html = _headline(run)
    best = display_name(run.best_model(run.paper_models))
    assert "Best model (mean Dice; differs from Real)" in html
    assert list(pw.loc[dice, "model"]) == ["Synthetic", "Diffusion+FT"]
    assert ("The models that differ significantly from Real in Dice (Holm-adjusted p &lt; 0.05): Synthetic, "
            f"Diffusion+FT; {best}: paired Wilcoxon p = 0.001") in html


def test_headline_of_a_best_model_that_alone_differs_says_it_once(run_dir):  # noqa: F811
    """"Differs significantly ...: Synthetic+FT; Synthetic+FT: paired Wilcoxon ..." named it twice."""
    from metsynth.report.sections.summary import _headline
    from metsynth.report.tables import paper_comparison

    run = RunData(run_dir)
    name = display_name(run.best_model(run.paper_models))
    comp = paper_comparison(run)
    pw = comp.pairwise.copy()
    dice = pw["metric"] == "dice"
    pw.loc[dice, ["wilcoxon_p_holm", "mannwhitney_p_holm"]] = [1.0, 1.0]
    pw.loc[dice & (pw["model"] == name), ["wilcoxon_p_holm", "diff_hl"]] = [0.004, 0.2]
    comp.pairwise = pw
    html = _headline(run)
    assert "It differs significantly from Real in Dice (paired Wilcoxon p = 0.004" in html
    assert html.count(f"{name}:") == 0 and "The models that differ" not in html


# ------------------------------------------------------------------------------ 6: training curves
def _capture_figures(monkeypatch) -> list:
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _integer_ticks(ax) -> bool:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def test_plot_curves_without_validation_draws_one_panel(tmp_path, monkeypatch):
    from metsynth.segmentation.callbacks import plot_curves

    saved = _capture_figures(monkeypatch)
    plot_curves({"train_loss": [(0, 0.9), (1, 0.7), (2, 0.6)], "val_dice": []}, tmp_path / "a.png")
    plot_curves({"train_loss": [(0, 0.9), (1, 0.7), (2, 0.6)], "val_dice": [(0, 0.2), (2, 0.4)]}, tmp_path / "b.png")
    alone, both = saved
    assert [ax.get_title() for ax in alone.axes] == ["training Dice loss"]
    assert [ax.get_title() for ax in both.axes] == ["training Dice loss", "validation Dice"]
    assert all(_integer_ticks(ax) for ax in alone.axes + both.axes)


def test_report_curves_promise_no_validation_dice_without_validation(run_dir, tmp_path, monkeypatch):  # noqa: F811
    copy = _copy(run_dir, tmp_path)
    fold = copy / "models" / "synthetic" / "fold0"
    buf = io.BytesIO()
    Image.new("RGB", (800, 320), "white").save(buf, format="PNG")  # a stored two-panel picture
    (fold / "curves.png").write_bytes(buf.getvalue())
    (fold / "logs").mkdir()
    (fold / "logs" / "metrics.csv").write_text("epoch,step,train_loss_epoch,train_loss_step\n"
                                               "0,9,,0.95\n0,9,0.9,\n1,19,0.7,\n2,29,0.6,\n")
    saved = _capture_figures(monkeypatch)
    qc = section_html(write_report(copy).read_text(encoding="utf-8"), "qc")
    caption = re.search(r"<figcaption>(Synthetic, fold0:.*?)</figcaption>", qc, re.S).group(1)
    assert "training loss only (no validation cases" in caption and "validation Dice" not in caption
    (curves,) = [f for f in saved if any("training Dice loss" in ax.get_title() for ax in f.axes)]
    assert len(curves.axes) == 1 and _integer_ticks(curves.axes[0])


# ------------------------------------------------------------------------------ 7: narrow pages
def test_pictures_and_tables_fit_narrow_pages(report):
    assert not re.search(r'max-width:\s*\d+px"', report)  # a bare pixel cap overrides max-width: 100%
    assert 'style="max-width:min(' in report
    assert report.count("<table") == report.count('<div class="scroll"><table')
    assert not re.search(r"\b[0-9a-f]{64}\b", re.sub(r"<pre>.*?</pre>", "", report, flags=re.S))


PROBE = """<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre');
  out.id = 'probe';
  const wide = [...document.querySelectorAll('img, table, .scroll')].filter(
      e => !e.closest('.scroll') || e.classList.contains('scroll')).map(
      e => e.getBoundingClientRect().right).filter(r => r > document.documentElement.clientWidth + 1);
  out.textContent = JSON.stringify({scroll: document.documentElement.scrollWidth,
                                    client: document.documentElement.clientWidth, wide: wide.length});
  document.body.appendChild(out);
});
</script>"""


def test_report_does_not_overflow_a_narrow_window(report, tmp_path):
    from browser import FLAGS, chromium_or_skip

    chromium = chromium_or_skip()
    page = tmp_path / "probe.html"
    page.write_text(report.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=700,1200",
                          "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[:300]
    data = json.loads(found.group(1).replace("&quot;", '"'))
    assert data["wide"] == 0 and data["scroll"] <= data["client"], data


# ------------------------------------------------------------------------------ 8: realism
def _realism(folder: Path) -> None:
    test = {"auc": 0.53, "ci95": [0.41, 0.63], "n_a": 10, "n_b": 10, "groups": 5}
    feature_null = {"auc": 0.54, "ci95": [0.46, 0.56], "splits": 3, "aucs": [0.46, 0.54, 0.56]}
    write_json(folder / "realism.json", {
        "config": {"folds": 5, "repeats": 3, "patch_mm": 24.0, "null_splits": 3},
        "n_real": 10, "real_groups": 5,
        "null_real": {"cnn": {"auc": 0.63, "ci95": [0.52, 0.77], "n_a": 5, "n_b": 5, "groups": 5},
                      "features": feature_null},
        "sets": {"synthetic": {"n_volumes": 10, "features": test, "cnn": test, "features_table": [],
                               "null": {"features": feature_null, "cnn": test}},
                 "t5": {"n_volumes": 10, "features": test, "features_table": [], "null": {"features": feature_null}}},
        "sweep": [{"timestep": 0, "set": "synthetic", "contrast_kept": 1.0, "contrast_kept_p10": 1.0,
                   "collapsed": 0, "features_auc": 0.53},
                  {"timestep": 5, "set": "t5", "contrast_kept": 0.9, "contrast_kept_p10": 0.8, "collapsed": 0,
                   "features_auc": 0.53}],
        "chosen_timestep": 5})


def test_realism_shows_the_cnn_null_control(run_dir, tmp_path, monkeypatch):  # noqa: F811
    copy = _copy(run_dir, tmp_path)
    _realism(copy / "realism")
    saved = _capture_figures(monkeypatch)
    realism = section_html(write_report(copy).read_text(encoding="utf-8"), "realism")
    table = parse_text(realism).tables[0]
    rows = rows_by_label(table)
    null = rows["real vs real (null)"]
    assert null[3] == "0.63 [0.52, 0.77]"  # the CNN's own null, beside the CNN's results
    assert null[2] == "0.54 (range 0.46–0.56, 3 splits)"  # a range over splits, not a bracketed interval
    assert all(cell.strip() for r in table for cell in r)  # no empty cell: "-" where nothing ran
    assert rows["t5"][3] == "-" and rows["t5"][5] == "-" and null[4] == "-"
    assert "only meaningful relative to the CNN's own null control" in realism
    # Figure 4 draws the CNN null as its own band
    (fig4,) = [f for f in saved if any(ax.get_title() == "realism" for ax in f.axes)]
    ax = next(ax for ax in fig4.axes if ax.get_title() == "realism")
    labels = [p.get_label() for p in ax.patches + ax.collections]
    assert "3D CNN null (real vs real, 95% CI)" in labels
    band = next(p for p in ax.patches if p.get_label() == "3D CNN null (real vs real, 95% CI)")
    lo, hi = band.get_y(), band.get_y() + band.get_height()  # axhspan: a rectangle in data y
    assert (lo, hi) == (pytest.approx(0.52), pytest.approx(0.77))


def test_an_online_model_says_what_it_drew_its_volumes_from():
    """An on-the-fly model stores no training volume: the report names its donors and femurs, not "nothing"."""
    from metsynth.report.tables import trained_on

    class Run:
        def __init__(self, sets):
            self.sets = sets

        def training_sets(self, model):
            return self.sets

    def online(donors, femurs):
        return {"train": [], "online": {"donor_cases": [f"M{i}" for i in range(donors)],
                                        "healthy_cases": [f"H{i}" for i in range(femurs)]}}

    assert trained_on(Run([online(3, 10), online(3, 10)]), "online") == \
        "3 real cases' lesions pasted on the fly into 10 healthy femurs per fold"
    assert trained_on(Run([online(2, 9), online(3, 10)]), "online") == \
        "2–3 real cases' lesions pasted on the fly into 9–10 healthy femurs per fold"
    real = [{"source": "real"}] * 3
    assert trained_on(Run([{"train": real}, {"train": real}]), "real") == "3 real per fold"
    assert trained_on(Run([{"train": []}]), "real") == "nothing per fold"


def test_what_a_run_could_detect_says_the_tests_do_not_see_the_trainings_spread(report):
    """Two trainings of one model on the same data differed by up to 0.09 mean Dice on the demo, and
    the paired test by case called them different: the report says so beside its power figures."""
    stats = section_html(report, "statistics")
    assert "Smallest mean Dice difference to Real each paired test could detect" in stats
    assert "treat each trained model as fixed" in stats and "segmentation.overrides.seed" in stats
