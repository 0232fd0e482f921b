"""The batch run: identical bytes for 1 or 2 workers and on Dask; resume after SIGKILL; safety."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metsynth.errors import ConfigError
from metsynth.parallel import TasksFailed
from metsynth.synthesis.bank import load_bank
from metsynth.synthesis.compose import HealthyFemur, SynthesisConfig, synthesize_one
from metsynth.synthesis.run import INDEX_COLUMNS, run_synthesis, stable_hash, volume_id, volume_seed
from metsynth.synthesis.transforms import LesionTransformParams, draw_params
from metsynth.volume import Volume

REPEATS = 3  # 2 healthy x 2 lesions x 3 = 12 attempts


def finished(run: Path) -> int:
    """Sidecars written (not counting a temporary file a kill left behind)."""
    folder = run / "sidecars"
    return len([p for p in folder.glob("*.json") if not p.name.startswith(".tmp-")]) if folder.is_dir() else 0


def snapshot(run: Path) -> dict[str, bytes]:
    """Every output file's bytes (config, images, labels, sidecars, index)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(toy_cohort, toy_bank, tmp_path_factory) -> Path:
    """An uninterrupted single-worker run: the bytes every other way of running must give."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    return out


def test_outputs_index_and_sidecars(reference, toy_cohort, toy_bank):
    files = snapshot(reference)
    with open(reference / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == INDEX_COLUMNS
    assert len(rows) == 12 and [r["volume_id"] for r in rows][:3] == [f"H00__M00-L1__r{r}" for r in range(3)]
    kept = [r for r in rows if r["kept"] == "true"]
    assert kept, "the toy run keeps volumes"
    for row in rows:
        sidecar = json.loads(files[f"sidecars/{row['volume_id']}.json"])
        expected = volume_seed(0, row["healthy_case"], row["donor_lesion"], int(row["repeat"]))
        assert sidecar["seed"]["volume_seed"] == int(row["seed"]) == expected
        assert sidecar["seed"]["entropy"] == [0, stable_hash(row["healthy_case"]), stable_hash(row["donor_lesion"]),
                                              int(row["repeat"])]
        assert sidecar["metsynth_version"] and sidecar["donor_case"] == row["donor_case"]
        if row["kept"] == "true":
            assert row["image"] in files and row["label"] in files and row["reason"] == ""
            assert set(sidecar["transform"]) >= {"rotation_deg", "scale", "edge_filter_size", "noise_sigma"}
            assert set(sidecar["placement"]) >= {"centre", "corner", "region", "tries"}
        else:
            assert row["reason"] and not row["image"] and "reason_detail" in sidecar
    # geometry of the outputs = the healthy case's grid
    row = kept[0]
    image, label = Volume.read(reference / row["image"]), Volume.read(reference / row["label"])
    healthy = Volume.read(toy_cohort.parent / "images" / f"{row['healthy_case']}.nii.gz")
    assert image.same_grid(healthy) and label.same_grid(healthy) and label.array.dtype == np.uint8
    assert label.array.sum() * 1.0 == pytest.approx(float(row["lesion_mm3"]))


def test_sidecar_replays_the_volume(reference, toy_cohort, toy_bank):
    """The recorded seed and parameters regenerate the written volume exactly."""
    from metsynth.cohort import load_cohort

    sidecar = json.loads(next(iter(sorted((reference / "sidecars").glob("H01__M01-L1__r1.json")))).read_text())
    entry = load_bank(toy_bank).entry(sidecar["donor_lesion"])
    healthy = HealthyFemur.load(load_cohort(toy_cohort).case(sidecar["healthy_case"]))
    rng = np.random.default_rng(sidecar["seed"]["volume_seed"])
    image, mask = entry.arrays()
    assert LesionTransformParams.from_dict(sidecar["transform"]) == draw_params(
        np.random.default_rng(sidecar["seed"]["volume_seed"]), SynthesisConfig().transform, entry)
    result = synthesize_one(healthy, entry, image, mask, SynthesisConfig(repeats=REPEATS), rng)
    if sidecar["kept"]:
        written = Volume.read(reference / sidecar["image"]).array
        assert written.tobytes() == result.image.tobytes()


def test_two_workers_give_identical_bytes(reference, toy_cohort, toy_bank, tmp_path):
    summary = run_synthesis(toy_cohort, toy_bank, tmp_path / "run", SynthesisConfig(repeats=REPEATS), workers=2,
                            progress=False)
    assert summary.attempts == 12 and summary.done_now == 12
    assert snapshot(tmp_path / "run") == snapshot(reference)


def test_dask_local_cluster_gives_identical_bytes(reference, toy_cohort, toy_bank, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            run_synthesis(toy_cohort, toy_bank, tmp_path / "run", SynthesisConfig(repeats=REPEATS), scheduler=client,
                          progress=False)
    assert snapshot(tmp_path / "run") == snapshot(reference)


def test_rerun_skips_finished_work(reference, toy_cohort, toy_bank, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(out)
    summary = run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert summary.done_before == 12 and summary.done_now == 0
    assert snapshot(out) == before
    # a deleted output is redone, identically
    first_kept = next(p for p in sorted((out / "images").iterdir()))
    first_kept.unlink()
    summary = run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert summary.done_now == 1 and snapshot(out) == before


KILL_SCRIPT = """
import sys, time
import metsynth.synthesis.attempts as attempts
import metsynth.synthesis.run as run
write = attempts.write_json  # the task writes each sidecar through it
def slow_write(path, data):  # slow the run down so that the kill lands in the middle of it
    result = write(path, data)
    time.sleep(0.15)
    return result
attempts.write_json = slow_write
from metsynth.synthesis.compose import SynthesisConfig
run.run_synthesis(sys.argv[1], sys.argv[2], sys.argv[3], SynthesisConfig(repeats=int(sys.argv[4])), progress=False)
"""


def test_sigkill_then_rerun_equals_an_uninterrupted_run(reference, toy_cohort, toy_bank, tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "slow_run.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(toy_cohort), str(toy_bank), str(out), str(REPEATS)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if finished(out) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = finished(out)
    assert 3 <= done < 12
    assert not (out / "index.csv").exists()
    summary = run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert summary.done_before == done and summary.done_before + summary.done_now == 12
    assert not list(out.rglob(".tmp-*"))
    assert snapshot(out) == snapshot(reference)


def test_another_configuration_is_refused_unless_forced(reference, toy_cohort, toy_bank, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    with pytest.raises(ConfigError, match=r"holds a synthesis run of other settings or inputs \(synthesis.seed: 0 ->"):
        run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS, seed=5), progress=False)
    summary = run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=1, seed=5), progress=False, force=True)
    assert summary.done_before == 0 and summary.attempts == 4
    assert len(list((out / "sidecars").iterdir())) == 4  # the old run's files are gone
    # a folder of other files and no config.yaml is refused too, and left as it was
    foreign = tmp_path / "foreign"
    (foreign / "images").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds files that are not a synthesis run \(images; no config.yaml\)"):
        run_synthesis(toy_cohort, toy_bank, foreign, SynthesisConfig(repeats=1), progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["images"]


def test_healthy_femurs_written_again_make_another_run(tmp_path):
    from helpers import written_again
    from metsynth.cohort import load_cohort
    from metsynth.synthesis.bank import extract_bank
    from synthesis.synth_toy import write_toy_cohort

    cohort = write_toy_cohort(tmp_path / "cohort")  # its own copy: the files are touched below
    bank = extract_bank(cohort, tmp_path / "bank", progress=False)
    config = SynthesisConfig(repeats=1)
    run_synthesis(cohort, bank, tmp_path / "run", config, progress=False)
    assert run_synthesis(cohort, bank, tmp_path / "run", config, progress=False).done_now == 0
    femur = load_cohort(cohort).by_role("healthy")[0].femur_mask
    written_again(femur)
    with pytest.raises(ConfigError, match=rf"\({femur.parent.name}/{femur.name}: written again since \(modified "):
        run_synthesis(cohort, bank, tmp_path / "run", config, progress=False)
    summary = run_synthesis(cohort, bank, tmp_path / "run", config, progress=False, force=True)
    assert summary.done_before == 0 and summary.done_now == summary.attempts


def test_failed_task_is_reported_and_the_rest_is_kept(reference, toy_cohort, toy_bank, tmp_path):
    bank = tmp_path / "bank"
    shutil.copytree(toy_bank, bank)
    patch = bank / "patches" / "M01-L1_image.nii.gz"
    good = patch.read_bytes()
    patch.write_bytes(b"not a nifti")
    out = tmp_path / "run"
    with pytest.raises(TasksFailed, match=r"2 of 4 synthesis tasks failed \(H00__M01-L1: InputError"):
        run_synthesis(toy_cohort, bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    with open(out / "index.csv", newline="") as fh:
        assert {r["donor_lesion"] for r in csv.DictReader(fh)} == {"M00-L1"}
    patch.write_bytes(good)
    summary = run_synthesis(toy_cohort, bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert summary.done_before == 6 and summary.done_now == 6
    ref = snapshot(reference)
    got = snapshot(out)
    assert {k: v for k, v in got.items() if k != "config.yaml"} == {k: v for k, v in ref.items() if k != "config.yaml"}


def test_compression_choices(toy_cohort, toy_bank, tmp_path):
    config = SynthesisConfig(repeats=1, image_compression_level=1, label_compression_level=None)
    run_synthesis(toy_cohort, toy_bank, tmp_path / "run", config, progress=False)
    images = sorted((tmp_path / "run" / "images").iterdir())
    labels = sorted((tmp_path / "run" / "labels").iterdir())
    assert images and all(p.name.endswith(".nii.gz") for p in images)
    assert labels and all(p.name.endswith(".nii") for p in labels)
    assert volume_id("H00", "M00-L1", 0) + ".nii.gz" in {p.name for p in images}
    assert Volume.read(images[0]).array.dtype == np.float32


# ----------------------------------------------------------------------------- full disks, units, spacing
def test_disk_full_midway_stops_leaves_no_partial_file_and_a_rerun_resumes(reference, toy_cohort, toy_bank, tmp_path,
                                                                          monkeypatch):
    import SimpleITK as sitk
    from typer.testing import CliRunner

    from metsynth import volume as volume_module
    from metsynth.cli import app
    from metsynth.volume import nifti_complete

    real = sitk.WriteImage
    calls = []

    def full_disk(image, name, *args):  # ITK on a full disk: a short file, no error
        calls.append(name)
        real(image, name, *args)
        if len(calls) >= 5:
            data = Path(name).read_bytes()
            Path(name).write_bytes(data[: len(data) // 4])

    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    monkeypatch.setattr(volume_module, "free_bytes", lambda folder: 0)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["--quiet", "synthesize", "--cohort", str(toy_cohort), "--bank", str(toy_bank),
                                      "--out", str(out), "--repeats", str(REPEATS),
                                      "--preset", "tiny"])  # float32, as the reference (paper: int16)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: disk full writing {out.resolve()}/")
    assert errors[0].endswith(": free space or choose another --out")
    assert len(calls) == 5  # stopped at the first short write: no other task ran
    assert 0 < finished(out) < 12
    assert not list(out.rglob(".tmp-*"))
    assert all(nifti_complete(p) for p in out.rglob("*.nii*"))  # nothing cut short under a final name
    monkeypatch.undo()
    summary = run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert summary.done_before == finished(reference) - summary.done_now > 0
    ref, got = snapshot(reference), snapshot(out)
    assert {k: v for k, v in got.items() if k != "config.yaml"} == {k: v for k, v in ref.items() if k != "config.yaml"}


@pytest.fixture(scope="module")
def raw_toy(tmp_path_factory) -> tuple[Path, Path]:
    """A toy cohort without a `prepared:` record (raw scans) and the bank extracted from it."""
    from metsynth.synthesis.bank import extract_bank
    from synthesis.synth_toy import write_toy_cohort

    root = tmp_path_factory.mktemp("raw")
    manifest = write_toy_cohort(root / "cohort", prepared=False)
    extract_bank(manifest, root / "bank", progress=False)
    return manifest, root / "bank"


def test_a_bank_of_raw_scans_is_refused_for_a_prepared_cohort(raw_toy, toy_cohort, tmp_path):
    from metsynth.errors import InputError

    out = tmp_path / "run"
    with pytest.raises(InputError) as info:
        run_synthesis(toy_cohort, raw_toy[1], out, SynthesisConfig(repeats=1), progress=False)
    message = str(info.value)
    assert f"{raw_toy[1]}/bank.json does not fit cohort {toy_cohort}, their intensity units differ" in message
    assert "raw (HU, not prepared)" in message and "prepared ([-1, 1] from the HU window -1000..2000)" in message
    assert f"metsynth lesions extract {toy_cohort} --out NEW_BANK" in message and "\n" not in message
    assert not out.exists()


def test_an_unprepared_cohort_is_refused_unless_allowed(raw_toy, toy_bank, tmp_path):
    from metsynth.errors import InputError

    manifest, bank = raw_toy
    with pytest.raises(InputError, match=rf"{manifest}: cohort is not prepared .*metsynth prepare"):
        run_synthesis(manifest, bank, tmp_path / "a", SynthesisConfig(repeats=1), progress=False)
    assert not (tmp_path / "a").exists()
    # allowed explicitly: raw lesions into raw scans, but not prepared lesions into raw scans
    assert run_synthesis(manifest, bank, tmp_path / "b", SynthesisConfig(repeats=1), progress=False,
                         allow_unprepared=True).attempts == 4
    with pytest.raises(InputError, match="their intensity units differ|does not fit cohort"):
        run_synthesis(manifest, toy_bank, tmp_path / "c", SynthesisConfig(repeats=1), progress=False,
                      allow_unprepared=True)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("prepared, differs", [
    ({"spacing": [0.85, 0.85, 0.85], "hu_window": [-1000.0, 2000.0]}, r"their voxel sizes differ \(2 of 2 lesions\)"),
    ({"spacing": [1.0, 1.0, 1.0], "hu_window": [-500.0, 2000.0]}, "their HU windows differ"),
])
def test_a_cohort_prepared_otherwise_is_refused(toy_cohort, toy_bank, tmp_path, prepared, differs):
    import yaml

    from metsynth.errors import InputError

    data = yaml.safe_load(toy_cohort.read_text())
    data["prepared"] = prepared
    for case in data["cases"]:  # the same files, under another preparation record
        for key in ("image", "femur_mask"):
            case[key] = str(toy_cohort.parent / case[key])
        for ann in case.get("lesion_masks", []):
            ann["path"] = str(toy_cohort.parent / ann["path"])
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(InputError, match=rf"does not fit cohort {other}, {differs}"):
        run_synthesis(other, toy_bank, tmp_path / "run", SynthesisConfig(repeats=1), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_bank_without_the_record_is_judged_by_its_intensities(raw_toy, toy_cohort, toy_bank, tmp_path, caplog):
    from metsynth.errors import InputError

    # as extract_bank wrote it before the `intensity` record: lesion means in HU -> refused
    old = tmp_path / "old_hu"
    shutil.copytree(raw_toy[1], old)
    data = json.loads((old / "bank.json").read_text())
    del data["intensity"]
    for entry in data["entries"]:
        entry["intensity_mean"], entry["intensity_std"] = 45.0, 30.0
    (old / "bank.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="inferred from the lesions' intensities, which go beyond"):
        run_synthesis(toy_cohort, old, tmp_path / "a", SynthesisConfig(repeats=1), progress=False)
    # an old bank of a prepared cohort (its hu_window recorded) is accepted
    old2 = tmp_path / "old_std"
    shutil.copytree(toy_bank, old2)
    data = json.loads((old2 / "bank.json").read_text())
    del data["intensity"]
    (old2 / "bank.json").write_text(json.dumps(data))
    assert run_synthesis(toy_cohort, old2, tmp_path / "b", SynthesisConfig(repeats=1), progress=False).attempts == 4
    # ... and one with neither record, lesions inside [-1, 1]: accepted with a warning (window unknown)
    data["hu_window"] = None
    (old2 / "bank.json").write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        run_synthesis(toy_cohort, old2, tmp_path / "c", SynthesisConfig(repeats=1), progress=False)
    assert "HU window" in caplog.text and "re-extract" in caplog.text


def test_a_request_that_cannot_fit_is_refused_before_writing(toy_cohort, toy_bank, tmp_path, monkeypatch):
    from metsynth import fileio
    from metsynth.errors import MetsynthError

    out = tmp_path / "run"
    start = time.perf_counter()
    with pytest.raises(MetsynthError, match=r"run: 4,000,000,000 synthetic volumes \(every attempt kept\) would need "
                                            r"about [\d.]+ [PT]iB but only .* is free there; ask for fewer --repeats"):
        run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=10**9), progress=False)
    assert time.perf_counter() - start < 10 and not out.exists()
    # 12 volumes of ~630 KB: refused on a disk with 1 MiB free, fine with 100 MiB
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 1 << 20)
    with pytest.raises(MetsynthError, match=r"12 synthetic volumes .* would need about 7\.\d MiB but only 1\.0 MiB"):
        run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert not out.exists()
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 100 << 20)
    run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=1), progress=False)
    # a resumed run counts only what is still to do
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 0)
    assert run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=1), progress=False).done_now == 0


def test_an_image_cut_short_under_its_final_name_is_redone(reference, toy_cohort, toy_bank, tmp_path):
    # what an older version left after a full disk: a short image whose sidecar says "done"
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    image = sorted((out / "images").iterdir())[0]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 3])
    summary = run_synthesis(toy_cohort, toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    assert summary.done_now == 1
    assert snapshot(out) == snapshot(reference)


def test_a_healthy_image_with_nan_is_one_line_before_any_attempt(toy_cohort, toy_bank, tmp_path, monkeypatch):
    """A bad healthy file is checked once, before the attempts: one line naming the case and the file
    (not one failure per attempt), and nothing is written."""
    import metsynth.cohort as cohort_module
    from metsynth.errors import InputError

    cohort = tmp_path / "cohort"
    shutil.copytree(toy_cohort.parent, cohort)
    image = cohort / "images" / "H01.nii.gz"
    vol = Volume.read(image)
    array = vol.array.astype(np.float32)
    array[1, 2, 3] = np.nan
    vol.with_array(array).write(image)
    loads = []
    real = cohort_module.load_case
    monkeypatch.setattr(cohort_module, "load_case", lambda case, *a, **k: loads.append(case.id) or real(case, *a, **k))
    out = tmp_path / "run"
    with pytest.raises(InputError) as err:
        run_synthesis(cohort / "cohort.yaml", toy_bank, out, SynthesisConfig(repeats=REPEATS), progress=False)
    text = str(err.value)
    assert text.startswith(f"healthy case H01: {image}: image has 1 NaN or infinite voxels") and "\n" not in text, text
    assert sorted(loads) == ["H00", "H01"]  # each healthy case opened once
    assert not out.exists()


def test_contact_matching_with_a_bank_that_lacks_contacts_is_refused_before_anything_is_written(
        toy_cohort, toy_bank, tmp_path):
    from dataclasses import replace

    from metsynth.errors import InputError
    from metsynth.synthesis.bank import load_bank

    bank = load_bank(toy_bank)
    old = replace(bank, entries=[replace(e, surface_contact=None) for e in bank.entries])  # an older bank
    out = tmp_path / "run"
    config = SynthesisConfig.from_dict({"repeats": 1, "placement": {"match_donor_contact": 4}})
    with pytest.raises(InputError, match=r"lesion .*: the bank does not record how much.*re-extract"):
        run_synthesis(toy_cohort, old, out, config, progress=False)
    assert not out.exists()
