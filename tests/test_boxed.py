"""Volumes stored as the box where they differ from a base (``image_layout: changed_box``).

Tiny volumes (32^3, the toy synthesis cohort): a few seconds in all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import kept_rows
from metsynth.boxed import FORMAT, changed_box, companion_path, is_boxed, write_boxed
from metsynth.errors import InputError
from metsynth.volume import IntensityScale, Volume

DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
WINDOW = (-1000.0, 2000.0)


def base_volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1, 1, (32, 30, 28)).astype(np.float32)
    return Volume(array, spacing=(0.85, 0.7, 1.2), origin=(10.5, -20.25, 3.0), direction=DIRECTION)


def with_lesion(base: Volume, lo=(5, 7, 9), hi=(12, 11, 20), value=-0.3) -> Volume:
    array = base.array.copy()
    array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    array[lo[0], lo[1], lo[2]] = base.array[lo[0], lo[1], lo[2]]  # a corner left as it was
    return base.with_array(array)


@pytest.fixture
def stored(tmp_path) -> tuple[Path, Path, Volume]:
    base = base_volume()
    base_path = base.write(tmp_path / "prepared" / "H001.nii.gz")
    volume = with_lesion(base)
    image = write_boxed(volume, base_path, tmp_path / "set" / "images" / "v1.nii.gz")
    return base_path, image, volume


def test_changed_box_is_the_smallest_box_of_the_differences():
    base = np.zeros((10, 11, 12), np.float32)
    array = base.copy()
    array[2, 3, 4] = 1
    array[5, 9, 6] = -1
    assert changed_box(array, base) == ((2, 3, 4), (6, 10, 7))
    assert changed_box(base, base) == ((0, 0, 0), (1, 1, 1))  # nothing changed: one voxel, a NIfTI is never empty
    with pytest.raises(ValueError):
        changed_box(array[:-1], base)


def test_a_boxed_volume_reads_back_whole_and_exact(stored):
    base_path, image, volume = stored
    assert is_boxed(image) and companion_path(image).name == "v1.base.json"
    record = json.loads(companion_path(image).read_text())
    assert record["format"] == FORMAT and record["offset"] == [5, 7, 9] and record["box_shape"] == [7, 4, 11]
    assert record["base"] == "../../prepared/H001.nii.gz"  # relative: the run folder can move as a whole
    on_disk = Volume._read_file(image, as_box=True)  # what a NIfTI viewer sees: the box, in place
    assert on_disk.shape == (7, 4, 11)
    assert np.allclose(on_disk.origin, volume.index_to_world(np.array([5.0, 7.0, 9.0])), atol=1e-4)
    back = Volume.read(image)
    assert back.grid_mismatch(volume) is None and back.path == image
    assert back.array.dtype == np.float32 and np.array_equal(back.array, volume.array)


def test_int16_box_is_within_half_a_step_and_exact_outside(tmp_path):
    base = base_volume(1)
    base_path = base.write(tmp_path / "H.nii")
    volume = with_lesion(base, value=-0.123456)
    scale = IntensityScale.hu_step(WINDOW)
    image = write_boxed(volume, base_path, tmp_path / "v.nii.gz", scale=scale)
    back = Volume.read(image).array
    inside = np.zeros(base.shape, bool)
    inside[5:12, 7:11, 9:20] = True
    assert np.array_equal(back[~inside], volume.array[~inside])  # the base's own values, to the bit
    assert np.abs(back[inside].astype(np.float64) - volume.array[inside]).max() <= scale.max_error + 1e-6


def test_a_missing_or_changed_base_is_an_error_naming_it(tmp_path):
    import os

    base = base_volume()
    base_path = base.write(tmp_path / "prepared" / "H001.nii")  # uncompressed: other values keep the size
    image = write_boxed(with_lesion(base), base_path, tmp_path / "set" / "v1.nii.gz")
    assert Volume.read(image).shape == base.shape  # its base is now in this process's memory
    moved = base_path.with_name("elsewhere.nii")
    base_path.rename(moved)
    with pytest.raises(InputError, match=r"prepared/H001\.nii, which is missing.*--force"):
        Volume.read(image)
    stat = moved.stat()
    base_volume(5).write(base_path)  # prepared again: other values, the same size, even the same mtime
    os.utime(base_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert base_path.stat().st_size == stat.st_size
    with pytest.raises(InputError, match="has changed since the box was written.*--force"):
        Volume.read(image)
    moved.replace(base_path)  # the original back: readable again
    assert np.array_equal(Volume.read(image).array, with_lesion(base).array)


def test_a_box_without_its_record_is_refused_not_read_as_the_volume(stored):
    _, image, _ = stored
    assert Volume._read_file(image, as_box=True).shape == (7, 4, 11)
    companion_path(image).unlink()
    with pytest.raises(InputError, match=r"v1\.nii\.gz: holds only the box.*v1\.base\.json.*is missing"):
        Volume.read(image)


def test_a_base_that_is_not_one_nifti_file_is_refused(tmp_path):
    base = base_volume()
    mha = base.write(tmp_path / "H.mha")
    with pytest.raises(InputError, match=r"H\.mha is not one.*image_layout: whole"):
        write_boxed(with_lesion(base), mha, tmp_path / "v.nii.gz")
    assert not list(tmp_path.glob("v.*"))


def test_a_box_that_does_not_match_its_record_is_refused(stored):
    base_path, image, volume = stored
    record = json.loads(companion_path(image).read_text())
    volume.crop((0, 0, 0), (3, 3, 3)).write(image)  # another file under the box's name
    with pytest.raises(InputError, match="does not match its record.*--force"):
        Volume.read(image)
    companion_path(image).write_text(json.dumps({**record, "image": "v2.nii.gz"}))
    with pytest.raises(InputError, match="is the record of v2.nii.gz, not v1.nii.gz"):
        Volume.read(image)
    companion_path(image).write_text(json.dumps({k: v for k, v in record.items() if k != "base_sha256"}))
    with pytest.raises(InputError, match="lacks base_sha256"):
        Volume.read(image)
    companion_path(image).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a record of a changed box"):
        Volume.read(image)


def test_a_box_on_another_grid_is_refused(tmp_path):
    base = base_volume()
    base_path = base.write(tmp_path / "H.nii.gz")
    other = Volume(base.array, spacing=(1.0, 1.0, 1.0), origin=base.origin, direction=base.direction)
    with pytest.raises(InputError, match="not on its grid"):
        write_boxed(other, base_path, tmp_path / "v.nii.gz")
    assert not list(tmp_path.glob("v.*"))  # nothing written


# ----------------------------------------------------------------------------- the synthesis
def test_synthesis_with_changed_boxes_reads_as_the_whole_volumes(toy_synthesis, tmp_path):
    from metsynth.cohort import load_cohort
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.output_size import estimate_output_bytes
    from metsynth.synthesis.run import run_synthesis

    cohort, bank = toy_synthesis
    whole = run_synthesis(cohort, bank, tmp_path / "whole", SynthesisConfig(repeats=2, image_compression_level=1),
                          progress=False).out_dir
    config = SynthesisConfig(repeats=2, image_compression_level=1, image_layout="changed_box")
    boxed = run_synthesis(cohort, bank, tmp_path / "boxed", config, progress=False).out_dir
    paper = SynthesisConfig(repeats=2, image_compression_level=1, image_layout="changed_box", image_storage="int16")
    ints = run_synthesis(cohort, bank, tmp_path / "int16", paper, progress=False).out_dir  # the study's paper preset
    rows_w, rows_b = kept_rows(whole), kept_rows(boxed)
    assert rows_w and [r["volume_id"] for r in rows_w] == [r["volume_id"] for r in rows_b]
    for row in kept_rows(ints):
        a, c = Volume.read(whole / row["image"]), Volume.read(ints / row["image"])
        record = json.loads(companion_path(ints / row["image"]).read_text())
        inside = np.zeros(a.shape, bool)
        inside[tuple(slice(o, o + n) for o, n in zip(record["offset"], record["box_shape"]))] = True
        assert np.array_equal(a.array[~inside], c.array[~inside])  # the femur's own values
        assert np.abs(a.array[inside].astype(np.float64) - c.array[inside]).max() * 1500 <= 0.5 + 1e-3  # HU
    healthy = {c.id: c for c in load_cohort(cohort).by_role("healthy")}
    boxed_bytes = 0
    for row_w, row_b in zip(rows_w, rows_b):
        a, b = Volume.read(whole / row_w["image"]), Volume.read(boxed / row_b["image"])
        assert b.grid_mismatch(a) is None and np.array_equal(a.array, b.array)
        assert is_boxed(boxed / row_b["image"]) and not is_boxed(whole / row_w["image"])
        record = json.loads(companion_path(boxed / row_b["image"]).read_text())
        assert (boxed / "images" / record["base"]).resolve() == Path(healthy[row_b["healthy_case"]].image).resolve()
        label = Volume.read(boxed / row_b["label"]).array > 0  # the whole lesion lies in the box
        lo, shape = np.array(record["offset"]), np.array(record["box_shape"])
        inside = np.zeros(label.shape, bool)
        inside[lo[0]:lo[0] + shape[0], lo[1]:lo[1] + shape[1], lo[2]:lo[2] + shape[2]] = True
        assert label.any() and not (label & ~inside).any()
        boxed_bytes += (boxed / row_b["image"]).stat().st_size
    whole_bytes = sum((whole / r["image"]).stat().st_size for r in rows_w)
    assert boxed_bytes < 0.5 * whole_bytes
    # the disk check's figure holds what was written, and is far below the whole volumes'
    from metsynth.synthesis.bank import load_bank

    bboxes = [e.bbox for e in load_bank(bank).entries]
    estimate = estimate_output_bytes(list(healthy.values()), len(bboxes), 2, config, bboxes)
    written = sum(p.stat().st_size for sub in ("images", "labels") for p in (boxed / sub).iterdir())
    assert written <= estimate < estimate_output_bytes(list(healthy.values()), len(bboxes), 2,
                                                       SynthesisConfig(repeats=2, image_compression_level=1))


def test_a_forced_whole_layout_rerun_over_a_boxed_run_leaves_no_record(toy_synthesis, tmp_path):
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.run import run_synthesis

    cohort, bank = toy_synthesis
    out = tmp_path / "run"
    run_synthesis(cohort, bank, out, SynthesisConfig(repeats=1, image_layout="changed_box",
                                                     image_compression_level=1), progress=False)
    assert list((out / "images").glob("*.base.json"))
    run_synthesis(cohort, bank, out, SynthesisConfig(repeats=1, image_compression_level=1), progress=False,
                  force=True)
    assert not list((out / "images").glob("*.base.json"))
    for row in kept_rows(out):
        assert Volume._read_file(out / row["image"]).shape == Volume.read(out / row["image"]).shape  # whole again


def test_nnunet_export_writes_a_boxed_image_whole_rather_than_linking_it(stored, tmp_path):
    from metsynth.export.nnunet.write import write_case

    _, image, volume = stored
    dst = tmp_path / "export" / "case_0000.nii.gz"
    write_case({"key": "c", "what": "synthetic v1", "image": str(image), "label": None, "image_dst": str(dst),
                "label_dst": None, "intensity": "standardized", "hu_window": list(WINDOW), "link": True,
                "level": 1})
    assert not is_boxed(dst) and not dst.samefile(image)
    assert np.array_equal(Volume.read(dst).array, volume.array)


def test_the_study_paper_preset_stores_changed_boxes():
    """The study keeps the prepared femurs in its run folder beside the set; `metsynth synthesize` alone
    writes whole volumes unless asked."""
    from metsynth.experiment.config import load_experiment_config
    from metsynth.experiment.presets import experiment_preset
    from metsynth.synthesis.compose import SynthesisConfig

    assert SynthesisConfig.preset("paper").image_layout == "whole" and SynthesisConfig().image_layout == "whole"
    assert experiment_preset("paper").synthesis.image_layout == "changed_box"
    study = load_experiment_config(Path(__file__).parents[1] / "configs" / "paper.yaml")
    assert study.synthesis.image_layout == "changed_box"


def test_the_layout_enters_the_synthesis_stage_print_only_when_not_whole():
    """Runs made before the setting existed (whole images) keep their synthesize stage done."""
    from metsynth.experiment.pipeline import build_stages
    from metsynth.experiment.presets import experiment_preset

    demo, paper = experiment_preset("demo"), experiment_preset("paper")
    prints = {name: {s.name: s.config(None) for s in build_stages(cfg)}["synthesize"][1]
              for name, cfg in (("demo", demo), ("paper", paper))}
    assert "image_layout" not in prints["demo"] and prints["paper"]["image_layout"] == "changed_box"
    expected = {k: v for k, v in demo.synthesis.model_dump(mode="json").items() if k != "image_layout"}
    if expected["placement"]["match_donor_contact"] == 0:  # a later setting, left out at its default the same way
        del expected["placement"]["match_donor_contact"]
    assert prints["demo"] == expected


def test_export_whole_writes_a_boxed_set_for_other_tools_and_resumes(toy_synthesis, tmp_path):
    from typer.testing import CliRunner

    from metsynth.cli import app
    from metsynth.errors import ConfigError
    from metsynth.export.whole import export_whole
    from metsynth.synthesis.compose import SynthesisConfig
    from metsynth.synthesis.run import run_synthesis
    from metsynth.synthesis.sets import read_set

    cohort, bank = toy_synthesis
    config = SynthesisConfig(repeats=2, image_compression_level=1, image_layout="changed_box", image_storage="int16")
    boxed = run_synthesis(cohort, bank, tmp_path / "boxed", config, progress=False).out_dir
    result = CliRunner().invoke(app, ["-q", "export", "whole", str(boxed), "--out", str(tmp_path / "whole")])
    assert result.exit_code == 0, result.output
    whole = tmp_path / "whole"
    rows_b, rows_w = read_set(boxed), read_set(whole)
    assert list(rows_b["volume_id"]) == list(rows_w["volume_id"]) and len(rows_w) > 0
    for b, w in zip(rows_b.itertuples(), rows_w.itertuples()):
        assert not is_boxed(w.image) and Path(w.image).parent == whole / "images"
        on_disk = Volume._read_file(Path(w.image))  # what another tool reads: the whole volume, no record needed
        assert np.array_equal(on_disk.array, Volume.read(b.image).array)
        assert Path(w.label).read_bytes() == Path(b.label).read_bytes()
    assert (whole / "config.yaml").read_bytes() == (boxed / "config.yaml").read_bytes()
    assert len(list((whole / "sidecars").glob("*.json"))) == len(rows_w)
    again = export_whole(boxed, whole, progress=False)  # a rerun resumes: nothing written again
    assert again.written == 0 and again.already == len(rows_w)
    int16 = export_whole(boxed, tmp_path / "int16", "int16", progress=False).out_dir
    first = read_set(int16)["image"][0]
    error = np.abs(Volume.read(first).array.astype(np.float64) - Volume.read(rows_b["image"][0]).array).max()
    assert header_datatype(Path(first)) == 4 and error * 1500 <= 0.5 + 1e-3  # int16, within half a HU
    with pytest.raises(ConfigError, match="must not be the set"):
        export_whole(boxed, boxed / "images", progress=False)
    with pytest.raises(ConfigError):  # another set's folder, without --force
        export_whole(boxed, int16, progress=False)


def header_datatype(path: Path) -> int:
    """The NIfTI datatype code of a file (4: int16, 16: float32)."""
    import gzip

    from metsynth.volume import nifti_layout

    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as fh:
        return nifti_layout(fh.read(540)).datatype



def test_threads_reading_boxes_of_one_femur_load_it_once(tmp_path, monkeypatch):
    """Dask workers run tasks in threads: they share the femur, read once, and every volume is right."""
    from concurrent.futures import ThreadPoolExecutor

    from metsynth import boxed

    base = base_volume(7)
    base_path = base.write(tmp_path / "H.nii.gz")
    volumes = {}
    for k in range(8):
        volume = with_lesion(base, lo=(2 + k, 3, 4), hi=(9 + k, 10, 12), value=-0.1 * k)
        volumes[write_boxed(volume, base_path, tmp_path / f"v{k}.nii.gz")] = volume.array
    boxed._BASES.clear()
    boxed._DIGESTS.clear()
    reads = []
    original = Volume.read.__func__

    def counting(cls, path):
        if Path(path) == base_path:
            reads.append(path)
        return original(cls, path)

    monkeypatch.setattr(Volume, "read", classmethod(counting))
    with ThreadPoolExecutor(8) as pool:
        arrays = list(pool.map(lambda p: Volume.read(p).array, list(volumes) * 3))
    assert all(np.array_equal(a, volumes[p]) for a, p in zip(arrays, list(volumes) * 3))
    assert len(reads) == 1
    assert not boxed.base_volume(base_path, Volume.read).array.flags.writeable  # shared: never written into
