"""``metsynth realism`` on a tiny study: real lesions vs the synthetic set, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metsynth.cli import app
from metsynth.errors import InputError
from metsynth.experiment import ExperimentConfig, experiment_preset, run_experiment
from metsynth.layout import RunLayout
from metsynth.realism.measure import RealismConfig, measure_realism, real_lesion_count, run_sets


def invoke(*args: str):
    return CliRunner().invoke(app, ["--quiet", *args])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny study up to synthesis, with the paper's mean-filter edges (what the realism measure catches)."""
    data = experiment_preset("tiny").model_dump(mode="json")
    data["models"] = ["real", "synthetic"]
    data["variability_model"] = "synthetic"
    data["cohort"]["phantom"]["test"] = 2
    config = ExperimentConfig.from_dict(data)
    run = tmp_path_factory.mktemp("realism") / "run"
    run_experiment(config, run, until="synthesize", progress=False)
    return run


FAST = {"folds": 2, "repeats": 1, "cnn_epochs": 2, "bootstrap": 100, "null_splits": 2, "donor_null_splits": 4}


def test_realism_of_a_run_is_measured_and_repeatable(tiny_run, tmp_path):
    config_file = tmp_path / "realism.yaml"
    config_file.write_text("realism:\n" + "".join(f"  {k}: {v}\n" for k, v in FAST.items()))
    result = invoke("realism", str(tiny_run), "--config", str(config_file), "--cnn")
    assert result.exit_code == 0, result.output
    assert "features AUC" in result.output and "real vs real (null)" in result.output
    assert "What gives **synthetic** away" in result.output
    out = RunLayout(tiny_run).realism
    report = json.loads((out / "realism.json").read_text())
    n_real = real_lesion_count(RunLayout(tiny_run).prepared_manifest, RealismConfig())
    assert report["n_real"] == n_real >= 4
    syn = report["sets"]["synthetic"]
    for key in ("features", "cnn"):
        t = syn[key]
        assert 0.0 <= t["auc"] <= 1.0 and 0.0 <= t["ci95"][0] <= t["ci95"][1] <= 1.0
        assert t["n_a"] == n_real and t["n_b"] == syn["n_volumes"]
    assert "features" in syn["null"] and "features" in report["null_real"]
    # the donor reference: the groups of the generated lesions are the bank's donor cases
    donors = {line.split(",")[1] for line in (out / "features.csv").read_text().splitlines()[1:]
              if line.split(",")[2] == "synthetic"}
    reference = report["donor_reference"]
    assert reference["donor_groups"] == sorted(donors) and reference["k"] == len(donors)
    assert reference["set"] == "synthetic" and set(reference) >= {"copies", "chance"}
    chance = reference["chance"]
    if "aucs" in chance:  # the tiny cohort may have too few patients to draw from
        assert chance["draws"] == len(chance["aucs"]) <= FAST["donor_null_splits"]
        assert syn["chance_share"] == sum(a < syn["features"]["auc"] for a in chance["aucs"]) / len(chance["aucs"])
    else:
        assert chance.get("skipped") or chance.get("not_meaningful")
    assert len(syn["null"]["features"]["aucs"]) <= FAST["null_splits"]
    names = [row["feature"] for row in syn["features_table"]]
    assert "edge_inner" in names and len(names) == len(set(names))
    csv_lines = (out / "features.csv").read_text().splitlines()
    assert csv_lines[0].startswith("key,group,source,") and len(csv_lines) == 1 + n_real + syn["n_volumes"]

    # same input, same numbers
    first = (out / "realism.json").read_text()
    assert invoke("realism", str(tiny_run), "--config", str(config_file), "--cnn").exit_code == 0
    assert (out / "realism.json").read_text() == first


def test_mean_filter_edges_are_softer_than_real_ones_and_the_donor_model_fixes_it(tiny_run, tmp_path):
    """The giveaway this measure found in the demo: the paper's blend doubles the edge width."""
    from metsynth.synthesis.run import run_synthesis

    layout = RunLayout(tiny_run)
    config = RealismConfig(**FAST, cnn=False)
    base = measure_realism(layout.prepared_manifest, {"synthetic": layout.synthetic}, tmp_path / "a", config,
                           progress=False)
    row = {r["feature"]: r for r in base["sets"]["synthetic"]["features_table"]}["edge_inner"]
    assert row["generated"] > row["real"] + 0.1, row

    synthesis = ExperimentConfig.from_yaml(layout.config).synthesis
    synthesis = synthesis.model_copy(
        update={"transform": synthesis.transform.model_copy(update={"edge_model": "donor"})})
    run_synthesis(layout.prepared_manifest, layout.bank, tmp_path / "donor", synthesis, progress=False)
    fixed = measure_realism(layout.prepared_manifest, {"synthetic": tmp_path / "donor"}, tmp_path / "b", config,
                            progress=False)
    row2 = {r["feature"]: r for r in fixed["sets"]["synthetic"]["features_table"]}["edge_inner"]
    assert abs(row2["generated"] - row2["real"]) < abs(row["generated"] - row["real"]) / 2, (row, row2)


def test_bad_realism_inputs_are_named(tiny_run, tmp_path):
    result = invoke("realism", str(tmp_path / "nowhere"))
    assert result.exit_code != 0 and "no prepared cohort" in result.output
    result = invoke("realism", str(tiny_run), "--set", "oops")
    assert result.exit_code != 0 and "NAME=FOLDER" in result.output
    result = invoke("realism", "--cohort", str(RunLayout(tiny_run).prepared_manifest), "--set", f"x={tmp_path}",
                    "-o", str(tmp_path / "out"))
    assert result.exit_code != 0 and "index.csv" in result.output
    assert not (tmp_path / "out").exists(), "a refused measure writes nothing"
    result = invoke("realism")
    assert result.exit_code != 0 and "--cohort" in result.output
    manifest, sets = run_sets(tiny_run)
    assert set(sets) == {"synthetic"} and manifest == RunLayout(tiny_run).prepared_manifest


def test_the_report_shows_the_realism_section(tiny_run, tmp_path):
    from metsynth.report import write_report

    config = RealismConfig(**FAST, cnn=False)
    layout = RunLayout(tiny_run)
    measure_realism(layout.prepared_manifest, {"synthetic": layout.synthetic}, layout.realism, config, progress=False)
    text = write_report(tiny_run, tmp_path / "report.html").read_text()
    section = text[text.index('id="realism"'):]
    section = section[: section.index("</section>")]
    assert "Classifier two-sample tests" in section and "real vs real (null)" in section
    assert "What gives each set away" in section and "edge_inner" in section
    assert "Not run" not in section


def test_a_study_s_realism_results_are_not_replaced_by_other_settings(tiny_run, tmp_path):
    config_file = tmp_path / "realism.yaml"
    config_file.write_text("realism:\n" + "".join(f"  {k}: {v}\n" for k, v in FAST.items()))
    assert invoke("realism", str(tiny_run), "--config", str(config_file), "--no-cnn").exit_code == 0
    out = RunLayout(tiny_run).realism / "realism.json"
    before = out.read_bytes()
    result = invoke("realism", str(tiny_run), "--config", str(config_file), "--no-cnn", "--seed", "5")
    assert result.exit_code != 0
    assert "holds the study's realism results of other settings or inputs (config.seed: " in result.output
    assert "--out DIR" in result.output and out.read_bytes() == before
    elsewhere = tmp_path / "other"
    result = invoke("realism", str(tiny_run), "--config", str(config_file), "--no-cnn", "--seed", "5",
                    "--out", str(elsewhere))
    assert result.exit_code == 0, result.output
    assert (elsewhere / "realism.json").is_file() and out.read_bytes() == before
    result = invoke("realism", str(tiny_run), "--config", str(config_file), "--no-cnn", "--seed", "5", "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["config"]["seed"] == 5
    # results of an older metsynth, without a setting added since, count as made with its default
    record = json.loads(out.read_text())
    del record["config"]["donor_null_splits"]
    out.write_text(json.dumps(record))
    settings = FAST | {"donor_null_splits": RealismConfig().donor_null_splits}
    config_file.write_text("realism:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items()))
    result = invoke("realism", str(tiny_run), "--config", str(config_file), "--no-cnn", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["config"]["donor_null_splits"] == RealismConfig().donor_null_splits


def test_figure_4_marks_the_study_s_start_timestep_wherever_the_measure_is_written(tmp_path):
    from metsynth.realism.commands import study_start_timestep

    config = experiment_preset("tiny")
    run = tmp_path / "run"
    run.mkdir()
    config.to_yaml(run / "config.yaml")
    chosen = config.diffusion_settings.harmonize.start_timestep
    assert study_start_timestep(run, {"synthetic": run, "harmonized": run}) == chosen
    assert study_start_timestep(run, {"synthetic": run}) is None  # no harmonized set to mark
    assert study_start_timestep(tmp_path, {"harmonized": run}) is None  # not a study's folder
    (run / "config.yaml").write_text("name: x\nno_such_section: 1\n")  # a config this version cannot read
    assert study_start_timestep(run, {"harmonized": run}) is None


def test_a_set_in_other_units_than_the_cohort_is_refused(tiny_run, tmp_path):
    """The raw (HU) cohort against a set synthesized from its prepared copy ([-1, 1]): refused, one
    line naming both and the prepared manifest to use, nothing written (synthesize refuses alike)."""
    layout = RunLayout(tiny_run)
    raw = layout.phantom / "cohort.yaml"
    assert raw.is_file()
    out = tmp_path / "out"
    result = invoke("realism", "--cohort", str(raw), "--set", f"syn={layout.synthetic}", "-o", str(out), "--no-cnn")
    assert result.exit_code != 0
    line = next(line for line in result.output.splitlines() if "does not fit cohort" in line)
    assert str(raw) in line and str(layout.synthetic) in line and "raw HU" in line
    assert f"--cohort {layout.prepared_manifest.resolve()}" in line
    assert not out.exists()
    # a harmonized set: the units of the set it was made from (harmonize.yaml's source)
    harmonized = tmp_path / "harmonized"
    harmonized.mkdir()
    (harmonized / "index.csv").write_text((layout.synthetic / "index.csv").read_text())
    (harmonized / "harmonize.yaml").write_text(f"source: {layout.synthetic}\n")
    with pytest.raises(InputError, match="does not fit cohort.*harmonize.yaml"):
        measure_realism(raw, {"harmonized": harmonized}, out, RealismConfig(**FAST, cnn=False), progress=False)
    # a set recording neither: judged from its images (inside [-1, 1])
    bare = tmp_path / "bare"
    bare.mkdir()
    rows = (layout.synthetic / "index.csv").read_text().splitlines()
    header = rows[0].split(",")
    fixed = [rows[0]]
    for row in rows[1:]:
        cells = row.split(",")
        for col in ("image", "label"):
            i = header.index(col)
            cells[i] = str(layout.synthetic / cells[i]) if cells[i] else ""
        fixed.append(",".join(cells))
    (bare / "index.csv").write_text("\n".join(fixed) + "\n")
    with pytest.raises(InputError, match="does not fit cohort.*judged from the intensities"):
        measure_realism(raw, {"bare": bare}, out, RealismConfig(**FAST, cnn=False), progress=False)
    assert not out.exists()


def test_too_few_lesions_are_marked_not_meaningful_never_printed_as_0_5(tiny_run, tmp_path):
    """The tiny study's real-vs-real null with 2 folds trains on 5-6 lesions: the trees cannot split
    and its AUC is 0.5 [0.5, 0.5] by construction. It is marked, in realism.json, realism.md and the
    printed summary, while the set's own test (enough lesions) keeps its number."""
    config_file = tmp_path / "realism.yaml"
    config_file.write_text("realism:\n" + "".join(f"  {k}: {v}\n" for k, v in FAST.items()))
    out = tmp_path / "out"
    result = invoke("realism", "--cohort", str(RunLayout(tiny_run).prepared_manifest), "--set",
                    f"synthetic={RunLayout(tiny_run).synthetic}", "-o", str(out), "--config", str(config_file),
                    "--no-cnn")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "realism.json").read_text())
    null = report["null_real"]["features"]
    assert null["auc"] is None and null["ci95"] is None and "learned nothing" in null["not_meaningful"]
    assert any(line.startswith("real vs real (null), features") and "at least 10 lesions" in line
               for line in report["not_meaningful"])
    syn = report["sets"]["synthetic"]["features"]
    assert "not_meaningful" not in syn and 0.0 <= syn["auc"] <= 1.0
    md = (out / "realism.md").read_text()
    for text in (md, result.output):
        assert "0.50 [0.50, 0.50]" not in text
        assert "| real vs real (null) | " in text and "not meaningful |" in text and "**Not meaningful**" in text


def test_a_smaller_sweep_draws_its_volumes_from_the_realism_sample(tmp_path):
    """sweep.volumes under the realism sample: every swept volume is one the realism measure compares
    (drawn apart, 16 of 240 shared one volume with a sample of 53 and the study's realism stage failed)."""
    from metsynth.realism.measure import sample_volume_ids

    ids = [f"H{h:03d}__M{m:03d}-L1__r{r}" for h in range(10) for m in range(12) for r in range(2)]
    rows = [f"{v},{v[5:9]},true,images/{v}.nii,labels/{v}.nii" for v in ids]
    lines = ["volume_id,donor_case,kept,image,label", *rows]
    (tmp_path / "index.csv").write_text("\n".join(lines) + "\n")
    sample = sample_volume_ids(tmp_path, 53, seed=0)
    assert len(sample) == 53 and sample == sorted(sample) and set(sample) <= set(ids)
    for seed in range(5):
        full = sample_volume_ids(tmp_path, 53, seed)
        sub = sample_volume_ids(tmp_path, 53, seed, subset=16)
        assert len(sub) == 16 and set(sub) < set(full)
        assert sub == sample_volume_ids(tmp_path, 53, seed, subset=16)  # seeded
    assert sample_volume_ids(tmp_path, 53, 0, subset=16) != sample_volume_ids(tmp_path, 53, 1, subset=16)
    # a subset no smaller than the sample is the sample; a set no larger than n is the set
    assert sample_volume_ids(tmp_path, 53, 0, subset=53) == sample
    assert sample_volume_ids(tmp_path, 500, 0, subset=None) == sorted(ids)


def _kept_rows(run: Path) -> list[dict]:
    import csv

    return [r for r in csv.DictReader((RunLayout(run).synthetic / "index.csv").open()) if r["kept"] == "true"]


def _set_of(run: Path, folder: Path, chosen: list[dict], prefix: str) -> Path:
    """A set (index.csv only) of the run's synthetic volumes ``chosen``, their ids prefixed with ``prefix``."""
    import csv

    synthetic = RunLayout(run).synthetic
    folder.mkdir()
    with (folder / "index.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(chosen[0]))
        writer.writeheader()
        for r in chosen:  # the same files, named otherwise
            writer.writerow({**r, "volume_id": prefix + r["volume_id"], "image": str(synthetic / r["image"]),
                             "label": str(synthetic / r["label"])})
    return folder


def test_a_set_of_other_volumes_is_sampled_on_its_own_and_a_set_too_small_is_named(tiny_run, tmp_path):
    """Sets share the first set's sample where they hold it (harmonized, sweep); a set of other volumes (another
    synthesis's names) draws its own instead of finding no lesion."""
    from metsynth.realism.measure import set_sample

    layout = RunLayout(tiny_run)
    kept = _kept_rows(tiny_run)

    def write_set(name: str, chosen: list[dict], prefix: str) -> Path:
        return _set_of(tiny_run, tmp_path / name, chosen, prefix)

    other = write_set("other", kept, "again_")
    config = RealismConfig(**{**FAST, "cnn": False})
    sample = [r["volume_id"] for r in kept][:6]
    first_ids = {r["volume_id"] for r in kept}
    assert set_sample(layout.synthetic, sample, first_ids, 6, 0) == sample  # the set holds them: the same volumes
    assert all(v.startswith("again_") for v in set_sample(other, sample, first_ids, 6, 0))
    report = measure_realism(layout.prepared_manifest, {"synthetic": layout.synthetic, "other": other},
                             tmp_path / "out", config, progress=False)
    first, second = report["sets"]["synthetic"], report["sets"]["other"]
    assert second["n_volumes"] == first["n_volumes"] >= 4  # before: "only 0 generated lesion(s)"
    assert second["features"]["auc"] == first["features"]["auc"]  # the same volumes, drawn alike
    assert "paired" not in second  # other volumes: no lesion-for-lesion change to measure
    tiny = write_set("tiny", kept[:2], "two_")
    with pytest.raises(InputError, match=r"set 'tiny' \(.*tiny\): 2 of its volumes hold a lesion"):
        measure_realism(layout.prepared_manifest, {"synthetic": layout.synthetic, "tiny": tiny}, tmp_path / "out2",
                        config, progress=False)
    assert not (tmp_path / "out2").exists()
    donor = kept[0]["donor_case"]
    alone = [r for r in kept if r["donor_case"] == donor][:6]
    assert len(alone) >= 4
    one = write_set("one", alone, "one_")
    with pytest.raises(InputError, match=r"set 'one' \(.*one\): \d+ of its volumes .* from 1 donor\(s\)"):
        measure_realism(layout.prepared_manifest, {"synthetic": layout.synthetic, "one": one}, tmp_path / "out3",
                        config, progress=False)
    assert not (tmp_path / "out3").exists()


def test_sets_made_from_the_first_set_s_volumes_stay_paired_however_many_they_kept(tmp_path):
    """A harmonized set that dropped most of the sample, or a sweep of a few of its volumes, is read on the sample's
    volumes it holds; only a set of other volumes is sampled on its own."""
    from metsynth.realism.measure import sample_volume_ids, set_sample

    def write_set(name: str, ids: list[str]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "index.csv").write_text("volume_id,donor_case,kept,image,label\n" + "".join(
            f"{i},M001,true,images/{i}.nii.gz,labels/{i}.nii.gz\n" for i in ids))
        return folder

    all_ids = [f"H{h:03d}__M001-L1__r{r}" for h in range(24) for r in range(10)]  # 240 volumes
    first = write_set("synthetic", all_ids)
    sample = sample_volume_ids(first, 53, 0)
    kept = set(all_ids[::5])  # harmonizing dropped four volumes in five
    harmonized = write_set("harmonized", sorted(kept))
    shared = [i for i in sample if i in kept]
    assert 0 < 2 * len(shared) < len(sample)  # fewer than half of the sample survived
    assert set_sample(harmonized, sample, set(all_ids), 53, 0) == shared
    sweep = write_set("t5", sample[:16])
    assert set_sample(sweep, sample, set(all_ids), 53, 0) == sample[:16]
    other = write_set("other", [f"X{i}" for i in all_ids])
    assert set_sample(other, sample, set(all_ids), 53, 0) == sample_volume_ids(other, 53, 0)


def test_a_set_made_from_the_first_set_s_volumes_is_compared_with_it_lesion_for_lesion(tiny_run, tmp_path):
    """The paired change against the first set: 0 [0, 0] for the same lesions, rerun on the shared lesions where a
    set lacks some, and written to realism.json, realism.md and the sweep's rows."""
    from metsynth.realism.measure import sample_volume_ids

    layout = RunLayout(tiny_run)
    kept = _kept_rows(tiny_run)
    config = RealismConfig(**{**FAST, "cnn": False})
    n = real_lesion_count(layout.prepared_manifest, config)
    sample = set(sample_volume_ids(layout.synthetic, n, config.seed))
    dropped = [r for r in kept if r["volume_id"] in sample][:2]
    same = _set_of(tiny_run, tmp_path / "same", kept, "")
    fewer = _set_of(tiny_run, tmp_path / "fewer", [r for r in kept if r not in dropped], "")
    report = measure_realism(layout.prepared_manifest, {"synthetic": layout.synthetic, "t2": same, "t5": fewer},
                             tmp_path / "out", config, progress=False)
    first = report["sets"]["synthetic"]
    assert "paired" not in first
    for name, lesions in (("t2", first["n_volumes"]), ("t5", first["n_volumes"] - 2)):
        paired = report["sets"][name]["paired"]
        assert paired["set"] == "synthetic" and paired["lesions"] == report["sets"][name]["n_volumes"] == lesions
        # the same images: no change, and a zero-width interval, also where both tests ran again on fewer lesions
        assert paired["delta_auc"] == 0.0 and paired["ci95"] == [0.0, 0.0]
    assert [row.get("paired", {}).get("lesions") for row in report["sweep"]] == [None, first["n_volumes"],
                                                                                first["n_volumes"] - 2]
    md = (tmp_path / "out" / "realism.md").read_text()
    assert "features AUC - synthetic's, same lesions [95%]" in md
    assert "t2 0.00 [0.00, 0.00], level (the interval holds 0)" in md
    import html as markup

    from metsynth.report.sections.realism import _realism_table

    html = markup.unescape(_realism_table(report))
    assert "features AUC − synthetic's, same lesions" in html and "0.00\u00a0[0.00,\u00a00.00]" in html
    assert "Against the synthetic set on the same lesions" in html
    # without the synthetic set, the sweep has no t = 0: no row claims a change against it
    alone = measure_realism(layout.prepared_manifest, {"t2": same, "t5": fewer}, tmp_path / "out2", config,
                            progress=False)
    assert alone["sets"]["t5"]["paired"]["set"] == "t2"
    assert alone["sweep"] and not any("paired" in row for row in alone["sweep"])


def test_the_paired_change_is_decided_where_a_set_moved_away_from_real():
    """Lesions made much easier to spot (one feature shifted) read as easier, with an interval above 0."""
    from metsynth.realism.features import FEATURES
    from metsynth.realism.measure import (
        LesionSample,
        _tests,
        paired_cell,
        paired_difference,
        paired_reading,
        paired_text,
    )

    rng = np.random.default_rng(0)

    def lesion(key, group, shift=0.0):
        feats = {k: float(rng.normal()) for k in FEATURES}
        feats["contrast"] += shift
        return LesionSample(key, group, key.split("/")[0], feats, np.zeros((2, 2, 2)))

    config = RealismConfig(cnn=False, repeats=1, bootstrap=200)
    real = [lesion(f"real/P{p}/L{k}", f"P{p}") for p in range(20) for k in range(2)]
    first = [lesion(f"synthetic/v{i}", f"D{i % 5}") for i in range(40)]
    moved = [LesionSample(f"t5/v{i}", g.group, "t5", {**g.features, "contrast": g.features["contrast"] + 3.0},
                          g.patch) for i, g in enumerate(first)]
    tests = [_tests(real, x, config, config.seed, cnn=False)["features"] for x in (first, moved)]
    delta = paired_difference(real, first, tests[0], moved, tests[1], config, "synthetic")
    assert delta["lesions"] == 40 and delta["delta_auc"] > 0.3 and delta["ci95"][0] > 0
    assert paired_reading(delta) == "easier to tell from real"
    assert paired_reading({**delta, "delta_auc": -0.2, "ci95": [-0.3, -0.1]}) == "harder to tell from real"
    renamed = [LesionSample(f"t5/other{i}", g.group, "t5", g.features, g.patch) for i, g in enumerate(moved)]
    assert paired_difference(real, first, tests[0], renamed, tests[1], config, "synthetic") is None
    # the same lesions in another order (and a set name with a slash): paired by volume id, no change
    turned = [LesionSample(f"a/b/v{i}", g.group, "a/b", g.features, g.patch) for i, g in enumerate(first)][::-1]
    test = _tests(real, turned, config, config.seed, cnn=False)["features"]
    same = paired_difference(real, first, tests[0], turned, test, config, "synthetic")
    assert same["lesions"] == 40 and same["delta_auc"] == 0.0 and same["ci95"] == [0.0, 0.0]
    # too few shared lesions: not compared, and said so
    few = paired_difference(real, first, tests[0], moved[:3], tests[1], config, "synthetic")
    assert few["skipped"].startswith("3 shared lesion(s)") and "delta_auc" not in few
    report = {"sets": {"synthetic": {"n_volumes": 40}, "t5": {"n_volumes": 3, "paired": few},
                       "t10": {"n_volumes": 40, "paired": delta}}}
    text = paired_text(report)
    assert "t5 not compared (3 shared lesion(s) from" in text and "t10 +0." in text and "easier" in text
    assert paired_cell(few) == "not compared" and paired_cell(None) == "-"


def test_max_real_cases_keeps_the_first_cases_of_a_role_and_says_so(tiny_run, tmp_path):
    """realism.max_real_cases: a role cut to its first cases in the cohort's order (the demo scores more test-only
    cases than its realism measure reads); the cut is recorded and printed, the other roles keep every case."""
    from metsynth.cohort import load_cohort
    from metsynth.realism.measure import real_cases

    manifest = RunLayout(tiny_run).prepared_manifest
    cohort = load_cohort(manifest)
    tests = [c.id for c in cohort.by_role("test") if c.reference_lesion() is not None]
    metastatic = [c.id for c in cohort.by_role("metastatic") if c.reference_lesion() is not None]
    assert len(tests) == 2 and metastatic
    capped = RealismConfig(max_real_cases={"test": 1})
    assert [c.id for c in real_cases(cohort, capped)] == [c.id for c in cohort.by_role("metastatic", "test")
                                                          if c.id in metastatic or c.id == tests[0]]
    assert real_lesion_count(manifest, capped) < real_lesion_count(manifest, RealismConfig())

    config_file = tmp_path / "realism.yaml"
    config_file.write_text("realism:\n" + "".join(f"  {k}: {v}\n" for k, v in FAST.items())
                           + "  max_real_cases:\n    test: 1\n")
    out = tmp_path / "out"
    result = invoke("realism", str(tiny_run), "-o", str(out), "--config", str(config_file), "--no-cnn")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "realism.json").read_text())
    assert report["real_cases"] == {"metastatic": [len(metastatic), len(metastatic)], "test": [1, 2]}
    assert report["n_real"] == real_lesion_count(manifest, capped)
    real_groups = {line.split(",")[0].split("/")[1] for line in (out / "features.csv").read_text().splitlines()[1:]
                   if line.split(",")[2] == "real"}
    assert real_groups == {*metastatic, tests[0]}
    from metsynth.report.sections.realism import _realism_table

    for text in ((out / "realism.md").read_text(), result.output, _realism_table(report)):
        assert "(the first 1 of 2 test cases: realism.max_real_cases)" in text


@pytest.mark.parametrize("caps, words", [({"healthy": 3}, "max_real_cases'.*names healthy, not among roles"),
                                         ({"test": 0}, r"max_real_cases\.test'.*greater than 0")])
def test_max_real_cases_naming_no_role_of_the_sample_or_no_case_is_refused(caps, words):
    from metsynth.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        RealismConfig.from_dict({"max_real_cases": caps})
    with pytest.raises(ConfigError, match="'realism." + words):
        ExperimentConfig.from_dict({**experiment_preset("tiny").model_dump(mode="json"),
                                    "realism": {"max_real_cases": caps}})


def test_harmonize_sweep_measures_the_real_sample_its_config_names(tiny_run, tmp_path):
    """`metsynth harmonize-sweep` (Figure 4 outside a study), end to end with the tiny study's DDPM: --config gives
    it a study's realism settings, real sample included (the demo's own cut), and it sizes the sweep by that."""
    from metsynth.diffusion.train import train_diffusion
    from metsynth.experiment.config import diffusion_settings
    from metsynth.synthesis.sets import read_set

    run = tiny_run
    ddpm = train_diffusion(RunLayout(run).prepared_manifest, tmp_path / "ddpm", diffusion_settings(experiment_preset(
        "tiny")), accelerator="cpu", devices=1, progress=False).export
    config_file = tmp_path / "study.yaml"
    config_file.write_text("realism:\n" + "".join(f"  {k}: {v}\n" for k, v in FAST.items())
                           + "  max_real_cases:\n    test: 1\n  max_per_set: 4\n")
    manifest = RunLayout(run).prepared_manifest
    out = tmp_path / "sweep"
    result = invoke("harmonize-sweep", str(RunLayout(run).synthetic), "-c", str(ddpm),
                    "--cohort", str(manifest), "-o", str(out), "--timesteps", "0,10", "--config", str(config_file))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "realism" / "realism.json").read_text())
    n_real = real_lesion_count(manifest, RealismConfig(max_real_cases={"test": 1}))
    assert report["real_cases"]["test"] == [1, 2] and report["n_real"] == n_real
    assert report["config"]["max_real_cases"] == {"test": 1} and report["config"]["folds"] == FAST["folds"]
    assert n_real > 4 and len(read_set(out / "t10")) == 4, "as many volumes as the study's max_per_set"
    assert (out / "realism" / "figure4.png").is_file() and "realism.max_real_cases" in result.output
