"""``metsynth export nnunet``: a valid nnU-Net v2 raw dataset (nnunetv2's own integrity check)
and a splits_final.json that honours the leakage rule, on a tiny run directory.

The run: a toy prepared cohort (2 healthy, 3 metastatic, 1 test-only case), its lesion bank, a
tiny synthesis run (12 volumes), 2 CV folds, and three planted index rows: a volume whose donor
is a test case of fold 0, one built on the test-only case, one whose donor is test-only.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from metsynth.errors import ConfigError, InputError
from metsynth.evaluation.splits import load_or_make_splits, load_splits
from metsynth.export.nnunet import NnunetExportConfig, check_export_leakage, export_nnunet, nnunet_id
from metsynth.prepare import destandardize
from metsynth.volume import Volume
from synthesis.synth_toy import HU_WINDOW, write_toy_cohort


@pytest.fixture(scope="module")
def app():
    from metsynth.cli import app as metsynth_app
    from metsynth.export.commands import register

    if not any(g.name == "export" for g in metsynth_app.registered_groups):
        register(metsynth_app)  # until metsynth.export.commands is in cli.COMMAND_MODULES
    return metsynth_app


def invoke(app, *args: str):
    return CliRunner().invoke(app, ["--quiet", *args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from metsynth.synthesis.bank import extract_bank
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.run import run_synthesis

    run = tmp_path_factory.mktemp("export") / "run"
    manifest = write_toy_cohort(run / "prepared", n_healthy=2, n_metastatic=3)
    data = yaml.safe_load(manifest.read_text())
    data["cases"].append({"id": "T00", "image": "images/M02.nii.gz", "femur_mask": "femur/M02.nii.gz",
                          "role": "test", "lesion_masks": [{"path": "lesions/M02.nii.gz"}]})
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    extract_bank(manifest, run / "bank", progress=False)
    run_synthesis(manifest, run / "bank", run / "synthetic", SynthesisConfig.preset("tiny"), progress=False)
    splits = load_or_make_splits(run / "splits.json", manifest, n_folds=2)
    index = run / "synthetic" / "index.csv"
    with open(index, newline="") as fh:
        rows = list(csv.DictReader(fh))
    template = rows[0]
    planted = [("planted-leak", "H00", splits.test(0)[0]),        # allowed in fold 1 only
               ("planted-on-test-only", "T00", splits.test(1)[0]),  # allowed nowhere
               ("planted-test-only-donor", "H01", "T00")]           # allowed nowhere
    with open(index, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(template), lineterminator="\n")
        for vid, healthy, donor in planted:
            writer.writerow({**template, "volume_id": vid, "healthy_case": healthy, "donor_case": donor})
    return run


@pytest.fixture(scope="module")
def exported(app, run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    result = invoke(app, "export", "nnunet", str(run_dir), "--dataset-id", "501", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "dataset:" in result.output
    return out / "Dataset501_Femur"


def read_cases(dataset: Path) -> dict[str, dict[str, str]]:
    with open(dataset / "cases.csv", newline="") as fh:
        return {r["nnunet_id"]: r for r in csv.DictReader(fh)}


def nnunet_python() -> str:
    """The interpreter of the separate nnU-Net environment (``make test`` builds .venv-nnunet).

    nnunetv2's dependencies pull a CUDA torchvision that breaks Lightning's imports, so it never
    shares metsynth's environment: the check runs in a subprocess with its own interpreter.
    """
    python = os.environ.get("METSYNTH_NNUNET_PYTHON")
    if not python:
        pytest.skip("METSYNTH_NNUNET_PYTHON is not set (make test sets it to .venv-nnunet/bin/python)")
    if not Path(python).exists():
        pytest.fail(f"METSYNTH_NNUNET_PYTHON={python} does not exist; run `make nnunet-env`")
    return python


def test_passes_nnunet_dataset_integrity_check(exported):
    env = {**os.environ,
           **{var: str(exported.parent) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    code = ("import sys; from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity; "
            "verify_dataset_integrity(sys.argv[1], 1)")
    done = subprocess.run([nnunet_python(), "-c", code, str(exported)], env=env, capture_output=True, text=True,
                          timeout=300)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed  # raises (AssertionError/RuntimeError) on a broken dataset
    assert "verify_dataset_integrity Done" in printed
    assert "Error" not in printed and "Warning" not in printed, printed  # origin/direction mismatches only warn


def test_dataset_json_and_files(exported, run_dir):
    meta = json.loads((exported / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["file_ending"] == ".nii.gz"
    images = sorted(p.name[: -len("_0000.nii.gz")] for p in (exported / "imagesTr").iterdir())
    labels = sorted(p.name[: -len(".nii.gz")] for p in (exported / "labelsTr").iterdir())
    assert images == labels and meta["numTraining"] == len(images) == 3 + 12 + 1  # real + synthetic + planted-leak
    assert [p.name for p in (exported / "imagesTs").iterdir()] == ["real_T00_0000.nii.gz"]
    assert (exported / "labelsTs" / "real_T00.nii.gz").is_file()
    assert not any(n.startswith("syn_planted-on") or n.startswith("syn_planted-test") for n in images)
    assert all(n.replace("-", "").replace("_", "").isalnum() for n in images)
    assert not any(p.name.startswith(".") for p in exported.parent.iterdir())  # no staging left behind


def test_splits_final_honours_the_leakage_rule(exported, run_dir):
    splits = load_splits(run_dir / "splits.json")
    final = json.loads((exported / "splits_final.json").read_text())
    cases = read_cases(exported)
    assert len(final) == splits.n_folds
    for k, fold in enumerate(final):
        assert sorted(fold["val"]) == sorted(nnunet_id("real", c) for c in splits.test(k))
        assert not set(fold["train"]) & set(fold["val"])
        banned = set(splits.test(k)) | set(splits.test_only)
        for case_id in fold["train"]:
            row = cases[case_id]
            if row["source"] == "real":
                assert row["case"] in splits.train(k)
            else:
                assert row["donor_case"] not in banned and row["healthy_case"] not in banned, (k, row)
        # every allowed volume is there: real training cases + synthetic volumes of other folds' donors
        allowed = {i for i, r in cases.items() if r["source"] == "synthetic" and r["donor_case"] not in banned}
        assert set(fold["train"]) == allowed | {nnunet_id("real", c) for c in splits.train(k)}
    assert "syn_planted-leak" not in final[0]["train"] and "syn_planted-leak" in final[1]["train"]
    check_export_leakage(exported, run_dir / "splits.json")


def test_tampered_split_is_caught(exported, run_dir, tmp_path):
    copy = tmp_path / exported.name
    shutil.copytree(exported, copy, symlinks=True)
    final = json.loads((copy / "splits_final.json").read_text())
    final[0]["train"].append("syn_planted-leak")
    (copy / "splits_final.json").write_text(json.dumps(final))
    with pytest.raises(InputError, match="fold 0.*leak test data"):
        check_export_leakage(copy, run_dir / "splits.json")


def test_images_are_hu_on_the_source_grid(exported, run_dir):
    for nid, src_image, src_label in (
        ("real_M00", run_dir / "prepared/images/M00.nii.gz", run_dir / "prepared/lesions/M00.nii.gz"),
        ("syn_H00__M01-L1__r0", run_dir / "synthetic/images/H00__M01-L1__r0.nii",
         run_dir / "synthetic/labels/H00__M01-L1__r0.nii.gz"),
    ):
        src, image = Volume.read(src_image), Volume.read(exported / "imagesTr" / f"{nid}_0000.nii.gz")
        label = Volume.read(exported / "labelsTr" / f"{nid}.nii.gz")
        for vol in (image, label):
            assert vol.spacing == src.spacing and vol.origin == src.origin
            assert np.array_equal(vol.direction, src.direction)
        assert image.array.dtype == np.float32
        np.testing.assert_array_equal(image.array, destandardize(src.array, HU_WINDOW))
        assert image.array.min() >= HU_WINDOW[0] and image.array.max() > 1000  # cortical bone in HU
        assert label.array.dtype == np.uint8 and set(np.unique(label.array)) == {0, 1}
        np.testing.assert_array_equal(label.array, Volume.read(src_label).array)


def test_explicit_inputs_limit_link_and_harmonized(run_dir, tmp_path):
    harmonized = tmp_path / "harmonized"  # a harmonized set has the synthetic set's layout
    shutil.copytree(run_dir / "synthetic", harmonized)
    config = NnunetExportConfig(dataset_id=7, name="Mixed", sources="synthetic,harmonized", limit=3, link=True,
                                intensity="standardized", test_cases=False)
    summary = export_nnunet(tmp_path / "raw", config, cohort=run_dir / "prepared/cohort.yaml",
                            splits=run_dir / "splits.json", synthetic=run_dir / "synthetic",
                            harmonized=harmonized, progress=False)
    dataset = tmp_path / "raw" / "Dataset007_Mixed"
    assert summary.dataset_dir == dataset and not (dataset / "imagesTs").exists()
    final = json.loads((dataset / "splits_final.json").read_text())
    assert [len(f["train"]) for f in final] == [3, 3]  # no real source: only the limited volumes
    assert all(not i.startswith("real_") for f in final for i in f["train"])
    cases = read_cases(dataset)
    assert {r["source"] for r in cases.values()} == {"real", "synthetic", "harmonized"}
    check_export_leakage(dataset, run_dir / "splits.json")
    # linked: labels always; real images too (standardized float32 .nii.gz); synthetic .nii images rewritten
    assert os.path.samefile(dataset / "labelsTr/real_M00.nii.gz", run_dir / "prepared/lesions/M00.nii.gz")
    assert os.path.samefile(dataset / "imagesTr/real_M00_0000.nii.gz", run_dir / "prepared/images/M00.nii.gz")
    syn = next(i for i in final[0]["train"] if i.startswith("syn_") or i.startswith("harm_"))
    written = Volume.read(dataset / "imagesTr" / f"{syn}_0000.nii.gz")
    assert written.array.min() >= -1.0 and written.array.max() <= 1.0
    # the same limit and seed choose the same volumes again (nested selection is by a seeded permutation)
    again = export_nnunet(tmp_path / "raw2", config, cohort=run_dir / "prepared/cohort.yaml",
                          splits=run_dir / "splits.json", synthetic=run_dir / "synthetic",
                          harmonized=harmonized, progress=False)
    assert json.loads((again.dataset_dir / "splits_final.json").read_text()) == final


def test_rerun_is_a_no_op_and_other_content_needs_force(app, run_dir, tmp_path):
    out = tmp_path / "raw"
    args = ("export", "nnunet", str(run_dir), "--dataset-id", "12", "--out", str(out), "--sources", "real")
    assert invoke(app, *args).exit_code == 0
    dataset_json = out / "Dataset012_Femur" / "dataset.json"
    stamp = dataset_json.stat().st_mtime_ns
    again = invoke(app, *args)
    assert again.exit_code == 0 and "already exported" in again.output
    assert dataset_json.stat().st_mtime_ns == stamp
    other = invoke(app, *args[:-1], "real,synthetic")
    assert other.exit_code == 2 and "--force" in other.output
    assert "holds an nnU-Net dataset of other settings or inputs" in other.output
    forced = invoke(app, *args[:-1], "real,synthetic", "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads(dataset_json.read_text())["numTraining"] == 16
    assert sorted(p.name for p in out.iterdir()) == ["Dataset012_Femur"]


def test_errors_name_the_fix(app, run_dir, tmp_path, monkeypatch):
    no_splits = tmp_path / "run"
    shutil.copytree(run_dir / "prepared", no_splits / "prepared")
    result = invoke(app, "export", "nnunet", str(no_splits), "--dataset-id", "3", "--out", str(tmp_path / "raw"),
                    "--sources", "real")
    assert result.exit_code == 2 and "splits file not found" in result.output and "--until splits" in result.output
    # no --out and no $nnUNet_raw: refused, nothing written in the working directory
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.chdir(tmp_path)
    result = invoke(app, "export", "nnunet", str(run_dir), "--dataset-id", "4")
    assert result.exit_code != 0 and "nnUNet_raw" in result.output and "--out" in result.output
    assert not (tmp_path / "nnUNet_raw").exists()
    with pytest.raises(InputError, match="no synthetic set here.*--until synthesize"):
        export_nnunet(tmp_path / "raw", NnunetExportConfig(dataset_id=3), no_splits, splits=run_dir / "splits.json")
    (tmp_path / "raw" / "Dataset003_Other").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already uses dataset id 3"):
        export_nnunet(tmp_path / "raw", NnunetExportConfig(dataset_id=3, sources="real"), run_dir)
    with pytest.raises(ConfigError, match="dataset name"):
        NnunetExportConfig.from_dict({"dataset_id": 4, "name": "femur mets"})
    with pytest.raises(ConfigError, match="did you mean 'synthetic'"):
        NnunetExportConfig.from_dict({"dataset_id": 4, "sources": "real,synthtic"})
    with pytest.raises(ConfigError, match="limit=2 applies to synthetic"):
        export_nnunet(tmp_path / "raw", NnunetExportConfig(dataset_id=5, sources="real", limit=2), run_dir)


def test_limit_picks_the_same_volumes_as_metsynth_training_sets(run_dir, tmp_path):
    from metsynth.segmentation.datasets import build_training_set

    config = NnunetExportConfig(dataset_id=9, sources="synthetic", limit=4, seed=3, test_cases=False)
    dataset = export_nnunet(tmp_path, config, run_dir, progress=False).dataset_dir
    final = json.loads((dataset / "splits_final.json").read_text())
    for k in range(2):
        ours = build_training_set(run_dir / "prepared/cohort.yaml", "synthetic", fold=k, splits=run_dir / "splits.json",
                                  synthetic=run_dir / "synthetic", limit=4, val_cases=0, seed=3 + k)
        assert sorted(final[k]["train"]) == sorted(nnunet_id("synthetic", v.case) for v in ours.train)


def test_interrupted_export_leaves_no_dataset_and_resumes(run_dir, tmp_path, monkeypatch):
    from metsynth.export.nnunet import write  # export_nnunet looks write_case up there
    from metsynth.parallel import TasksFailed

    real_write, calls = write.write_case, []

    def failing(task):
        calls.append(task["key"])
        if task["key"] == "real_M01":
            raise OSError("disk full")
        return real_write(task)

    monkeypatch.setattr(write, "write_case", failing)
    config = NnunetExportConfig(dataset_id=20, sources="real")
    with pytest.raises(TasksFailed, match="real_M01"):
        export_nnunet(tmp_path, config, run_dir, progress=False)
    assert not (tmp_path / "Dataset020_Femur").exists()  # nothing under the final name
    assert (tmp_path / ".partial-Dataset020_Femur" / "imagesTr" / "real_M00_0000.nii.gz").is_file()
    monkeypatch.setattr(write, "write_case", real_write)
    summary = export_nnunet(tmp_path, config, run_dir, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset020_Femur"]
    assert json.loads((summary.dataset_dir / "dataset.json").read_text())["numTraining"] == 3
