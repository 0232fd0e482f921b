"""``metsynth synthesize`` on the command line, with a preview montage and config errors."""

from __future__ import annotations

import csv

import matplotlib.image
import pytest
import yaml
from typer.testing import CliRunner

from metsynth.cli import app
from metsynth.synthesis.qc import write_preview


def invoke(*args: str):
    return CliRunner().invoke(app, ["--quiet", *args])


def test_synthesize_with_preview(toy_cohort, toy_bank, tmp_path):
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump({"synthesis": {"transform": {"noise_std": [0.0, 0.1]}, "min_lesion_mm3": 20}}))
    out = tmp_path / "run"
    result = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(toy_bank), "--out", str(out),
                    "--repeats", "2", "--seed", "7", "--preview", "3", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "8 attempts" in result.output and "preview:" in result.output
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["synthesis"]["seed"] == 7 and resolved["synthesis"]["repeats"] == 2
    assert resolved["synthesis"]["transform"]["noise_std"] == [0.0, 0.1]
    assert resolved["synthesis"]["transform"]["scale"] == [0.8, 1.25]  # defaults kept beside the override
    png = matplotlib.image.imread(out / "preview.png")
    assert png.ndim == 3 and png.shape[0] > 200
    with open(out / "index.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    # the same folder with other settings: one-line error, exit code 2
    again = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(toy_bank), "--out", str(out),
                   "--repeats", "2", "--seed", "8")
    assert again.exit_code == 2 and "holds a synthesis run of other settings or inputs" in again.output


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"repeats": 0}, "'repeats': Input should be greater than or equal to 1"),
        ({"transform": {"scale": [2, 1]}}, "scale: the lower bound 2 is above the upper bound 1"),
        ({"placement": {"region_weights": {"shaftt": 1}}}, "did you mean 'shaft'"),
        ({"image_compression_level": 12}, "'image_compression_level': Input should be less than or equal to 9"),
        ({"min_lesion_mm": 16}, "unknown setting 'min_lesion_mm'; did you mean 'min_lesion_mm3'"),
    ],
)
def test_bad_config_values_are_one_line_errors(toy_cohort, toy_bank, tmp_path, settings_, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(settings_))
    result = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(toy_bank), "--out", str(tmp_path / "r"),
                    "--config", str(config))
    assert result.exit_code == 2
    assert message in result.output and str(config) in result.output
    assert not (tmp_path / "r").exists()


def test_bad_preset_and_missing_bank(toy_cohort, tmp_path):
    result = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(tmp_path), "--out", str(tmp_path / "r"),
                    "--preset", "papr")
    assert result.exit_code == 2 and "did you mean 'paper'" in result.output
    result = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(tmp_path), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "not a lesion bank" in result.output


def test_healthy_cases_need_femur_masks(toy_cohort, toy_bank, tmp_path):
    data = yaml.safe_load(toy_cohort.read_text())
    for case in data["cases"]:
        case["image"] = str(toy_cohort.parent / case["image"])
        case.pop("femur_mask")
        for mask in case.get("lesion_masks", []):
            mask["path"] = str(toy_cohort.parent / mask["path"])
    manifest = tmp_path / "cohort.yaml"
    manifest.write_text(yaml.safe_dump(data))
    result = invoke("synthesize", "--cohort", str(manifest), "--bank", str(toy_bank), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "H00, H01 have no femur_mask" in result.output


def test_preview_needs_a_run(tmp_path):
    from metsynth.errors import InputError

    with pytest.raises(InputError, match="no index.csv"):
        write_preview(tmp_path, 2)


def test_help_texts():
    for args in (["synthesize", "--help"], ["lesions", "extract", "--help"], ["lesions", "--help"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_unbounded_repeats_are_refused_in_one_line(toy_cohort, toy_bank, tmp_path):
    out = tmp_path / "run"
    result = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(toy_bank), "--out", str(out),
                    "--repeats", "1000000000")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "4,000,000,000 synthetic volumes" in errors[0] and "is free there" in errors[0]
    assert "fewer --repeats" in errors[0] and "another --out" in errors[0]
    assert not out.exists()


def test_raw_bank_into_prepared_cohort_is_refused_in_one_line(toy_cohort, tmp_path):
    from metsynth.synthesis.bank import extract_bank
    from synthesis.synth_toy import write_toy_cohort

    raw = write_toy_cohort(tmp_path / "raw", n_healthy=0, n_metastatic=1, prepared=False)
    extract_bank(raw, tmp_path / "bank", progress=False)
    out = tmp_path / "run"
    result = invoke("synthesize", "--cohort", str(toy_cohort), "--bank", str(tmp_path / "bank"), "--out", str(out))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bank.json does not fit cohort" in errors[0] and "metsynth lesions extract" in errors[0]
    assert not out.exists()


def test_help_shows_bracketed_defaults_and_reflows_paragraphs(monkeypatch):
    """Help texts are markdown: '[default: 10]' is not eaten as a rich markup tag, and a docstring's
    hard-wrapped lines join into one paragraph instead of breaking mid-sentence."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    output = " ".join(CliRunner().invoke(app, ["synthesize", "--help"]).output.split())
    assert "[default: 10]" in output
    assert "the outputs are byte-identical whatever --workers or --scheduler" in output
