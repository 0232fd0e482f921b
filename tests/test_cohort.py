from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from helpers import make_volume, write_tiny_cohort
from metsynth.cli import app
from metsynth.cohort import check_cohort, load_cohort
from metsynth.errors import InputError
from metsynth.volume import Volume


def edit_manifest(manifest, fn):
    data = yaml.safe_load(manifest.read_text())
    fn(data)
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))


def snapshot(folder):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_valid_cohort_loads_and_checks(tiny_cohort):
    cohort = load_cohort(tiny_cohort)
    assert [c.id for c in cohort.cases] == ["H00", "M01", "M02"]
    assert cohort.case("M01").image.is_absolute()
    assert [c.id for c in cohort.by_role("metastatic")] == ["M01", "M02"]
    reports = check_cohort(cohort)
    assert reports[1].n_lesions == 1
    assert reports[1].lesion_mm3 == pytest.approx(64 * 1.0 * 0.8 * 0.8)


def test_folder_is_accepted(tiny_cohort):
    assert load_cohort(tiny_cohort.parent).name == "tiny"


def test_save_writes_relative_paths_and_reloads(tiny_cohort, tmp_path):
    cohort = load_cohort(tiny_cohort)
    out = cohort.save(tiny_cohort.parent / "copy.yaml")
    raw = yaml.safe_load(out.read_text())
    assert raw["cases"][1]["image"] == "images/M01.nii.gz"
    assert load_cohort(out).case("M01").image == cohort.case("M01").image


def test_duplicate_ids(tiny_cohort):
    edit_manifest(tiny_cohort, lambda d: d["cases"][1].update(id="H00"))
    with pytest.raises(InputError, match=r"cohort.yaml: duplicate case ids: H00; every case needs its own id$"):
        load_cohort(tiny_cohort)  # said as it is, not as "'(root)': Value error, ..."


def test_a_bad_value_names_the_case(tiny_cohort):
    edit_manifest(tiny_cohort, lambda d: d["cases"][1].update(role="healty"))
    case = yaml.safe_load(tiny_cohort.read_text())["cases"][1]["id"]
    with pytest.raises(InputError, match=rf"'cases.1.role' \(case '{case}'\): Input should be .* \(got 'healty'\)"):
        load_cohort(tiny_cohort)


def test_unknown_key_suggests_the_right_one(tiny_cohort):
    edit_manifest(tiny_cohort, lambda d: d["cases"][0].update(femur_msk="x.nii.gz"))
    # the case named by its id, not only by its place in the list
    with pytest.raises(InputError,
                       match=r"unknown setting 'cases.0.femur_msk' \(case 'H00'\); did you mean 'femur_mask'"):
        load_cohort(tiny_cohort)


def test_bad_role(tiny_cohort):
    edit_manifest(tiny_cohort, lambda d: d["cases"][0].update(role="sick"))
    with pytest.raises(InputError, match=r"cases.0.role.*'healthy', 'metastatic' or 'test'"):
        load_cohort(tiny_cohort)


def test_missing_file_names_case_and_file(tiny_cohort):
    (tiny_cohort.parent / "images" / "M01.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case M01: .*images/M01.nii.gz: file not found"):
        check_cohort(load_cohort(tiny_cohort))


def test_unreadable_file(tiny_cohort):
    (tiny_cohort.parent / "femur" / "H00.nii.gz").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"case H00: .*femur/H00.nii.gz: cannot be read"):
        check_cohort(load_cohort(tiny_cohort))


@pytest.mark.parametrize("change, expected", [
    (dict(shape=(24, 28, 30)), "shape"),
    (dict(spacing=(1.0, 0.8, 0.9)), "spacing"),
    (dict(origin=(5.0, -10.0, 21.0)), "origin"),
    (dict(direction=np.diag([1.0, 1.0, -1.0])), "direction"),
])
def test_mask_on_another_grid(tiny_cohort, change, expected):
    img = make_volume()
    arr = np.zeros(change.get("shape", img.shape), np.uint8)
    arr[10:12, 10:12, 10:12] = 1
    vol = Volume(arr, change.get("spacing", img.spacing), change.get("origin", img.origin),
                 change.get("direction", np.eye(3)))
    vol.write(tiny_cohort.parent / "lesions" / "M02.nii.gz")
    with pytest.raises(InputError, match=rf"case M02: .*lesions/M02.nii.gz: lesion mask .*not on the grid.*{expected}"):
        check_cohort(load_cohort(tiny_cohort))


def test_non_binary_mask(tiny_cohort):
    img = make_volume()
    img.with_array(np.full(img.shape, 2, np.uint8)).write(tiny_cohort.parent / "femur" / "M01.nii.gz")
    with pytest.raises(InputError, match=r"case M01: .*femur mask is not binary \(values 2\)"):
        check_cohort(load_cohort(tiny_cohort))


def test_empty_lesion_mask_on_metastatic_case(tiny_cohort):
    img = make_volume()
    img.with_array(np.zeros(img.shape, np.uint8)).write(tiny_cohort.parent / "lesions" / "M01.nii.gz")
    with pytest.raises(InputError, match="case M01: lesion mask .* is empty but the case is 'metastatic'"):
        check_cohort(load_cohort(tiny_cohort))


def test_metastatic_case_without_lesion_masks(tiny_cohort):
    edit_manifest(tiny_cohort, lambda d: d["cases"][1].pop("lesion_masks"))
    with pytest.raises(InputError, match="case M01: role 'metastatic' needs at least one entry in 'lesion_masks'"):
        check_cohort(load_cohort(tiny_cohort))


def test_2d_image(tiny_cohort):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((28, 32), np.int16)),
                    str(tiny_cohort.parent / "images" / "H00.nii.gz"))
    with pytest.raises(InputError, match="case H00: .*expected a 3D volume, got a 2D image"):
        check_cohort(load_cohort(tiny_cohort))


def test_nan_image(tiny_cohort):
    img = make_volume()
    arr = img.array.astype(np.float32)
    arr[0, 0, 0] = np.nan
    img.with_array(arr).write(tiny_cohort.parent / "images" / "M02.nii.gz")
    with pytest.raises(InputError, match="case M02: .*NaN or infinite"):
        check_cohort(load_cohort(tiny_cohort))


def test_all_problems_reported_at_once(tiny_cohort):
    (tiny_cohort.parent / "images" / "H00.nii.gz").unlink()
    (tiny_cohort.parent / "images" / "M02.nii.gz").unlink()
    with pytest.raises(InputError, match=r"2 problem\(s\)") as info:
        check_cohort(load_cohort(tiny_cohort))
    assert "H00" in str(info.value) and "M02" in str(info.value)


def test_annotator_choice(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "c", n_healthy=0, n_metastatic=1)
    edit_manifest(manifest, lambda d: d["cases"][0]["lesion_masks"].extend([
        {"path": "lesions/M00.nii.gz", "annotator": "A", "round": 2, "expertise": "novice"},
        {"path": "lesions/M00.nii.gz", "annotator": "A", "round": 1, "expertise": "novice"},
    ]))
    case = load_cohort(manifest).cases[0]
    assert case.reference_lesion().annotator == "reference"
    assert case.reference_lesion("A").round == 1
    with pytest.raises(InputError, match="no lesion mask by annotator 'Z'"):
        case.reference_lesion("Z")


def test_cli_check_prints_table(tiny_cohort):
    before = snapshot(tiny_cohort.parent)
    result = CliRunner().invoke(app, ["--quiet", "cohort", "check", str(tiny_cohort)])
    assert result.exit_code == 0, result.output
    assert "M01" in result.output and "3 cases OK" in result.output
    assert snapshot(tiny_cohort.parent) == before


def test_cli_error_is_one_line(tiny_cohort):
    (tiny_cohort.parent / "images" / "M01.nii.gz").unlink()
    result = CliRunner().invoke(app, ["--quiet", "cohort", "check", str(tiny_cohort)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "error: 1 problem(s)" in result.output and "file not found" in result.output


def test_image_cut_short_is_a_problem_not_zeros(tiny_cohort):
    # ITK reads the missing half of a cut .nii.gz as 0; the check names the file instead
    image = tiny_cohort.parent / "images" / "M01.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"case M01: .*M01\.nii\.gz: the file is incomplete"):
        check_cohort(load_cohort(tiny_cohort))
    before = snapshot(tiny_cohort.parent)
    result = CliRunner().invoke(app, ["--quiet", "cohort", "check", str(tiny_cohort)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "M01.nii.gz: the file is incomplete" in result.output and "copy or export it again" in result.output
    assert snapshot(tiny_cohort.parent) == before


@pytest.mark.parametrize("name, content", [
    ("M01.nii.gz", "gz"),     # by its suffix
    ("scan.yaml", "gz"),      # a .nii.gz under a manifest's name: by its gzip + NIfTI bytes
    ("scan.dat", "nii"),      # an uncompressed NIfTI: by its magic
])
def test_an_image_given_as_manifest_is_named_as_such(tiny_cohort, tmp_path, name, content):
    import gzip

    data = (tiny_cohort.parent / "images" / "M01.nii.gz").read_bytes()
    path = tmp_path / name
    path.write_bytes(data if content == "gz" else gzip.decompress(data))
    with pytest.raises(InputError) as err:
        load_cohort(path)
    assert str(err.value) == (f"{path} is an image, not a cohort manifest (a YAML file listing cases); give the "
                              "cohort.yaml instead (see `metsynth cohort --help`)")


def test_other_binary_given_as_manifest(tmp_path):
    (tmp_path / "notes.gz").write_bytes(__import__("gzip").compress(b"name: x\n"))
    with pytest.raises(InputError, match=r"notes.gz is a gzip-compressed file, not a cohort manifest"):
        load_cohort(tmp_path / "notes.gz")
    (tmp_path / "utf16.yaml").write_bytes("name: x\n".encode("utf-16"))  # text, told to save it as UTF-8
    with pytest.raises(InputError, match="not UTF-8"):
        load_cohort(tmp_path / "utf16.yaml")


def test_missing_file_of_a_manifest_names_the_manifest(tiny_cohort):
    edit_manifest(tiny_cohort, lambda d: d["cases"][1].update(image="scans/M01.nii.gz"))
    with pytest.raises(InputError) as err:
        check_cohort(load_cohort(tiny_cohort))
    assert (f"case M01: {tiny_cohort.parent}/scans/M01.nii.gz: file not found; check the path ('scans/M01.nii.gz' "
            f"in {tiny_cohort} is relative to the manifest's folder)") in str(err.value)


def _cohort_with_a_stray_mark(root):
    """M01's lesion mask holds its lesion, inside the femur, and a mark in the air 17 mm from it."""
    manifest = write_tiny_cohort(root, n_healthy=1, n_metastatic=2)
    image = make_volume(shape=(24, 60, 60), seed=1)
    image.write(root / "images" / "M01.nii.gz")
    image.with_array((image.array > 500).astype(np.uint8)).write(root / "femur" / "M01.nii.gz")
    lesion = np.zeros(image.shape, np.uint8)
    lesion[10:14, 28:32, 28:32] = 1  # in the bone
    lesion[2:4, 1:3, 1:3] = 1  # a corner of the air
    image.with_array(lesion).write(root / "lesions" / "M01.nii.gz")
    return manifest


def test_a_lesion_mark_away_from_the_femur_is_refused_naming_the_case_and_the_file(tmp_path):
    from metsynth.prepare import prepare_cohort

    manifest = _cohort_with_a_stray_mark(tmp_path / "cohort")
    says = (r"case M01: lesion mask .*lesions/M01\.nii\.gz \(.*\) marks 5 mm3 around voxel \(i, j, k\) = \(2, 2, 2\), "
            r"1[5-9]\.\d mm from the femur \(the manifest's femur_mask\); a femoral lesion touches its femur")
    with pytest.raises(InputError, match=says):
        check_cohort(load_cohort(manifest))
    with pytest.raises(InputError, match=says):
        prepare_cohort(load_cohort(manifest), tmp_path / "prepared", progress=False)
    assert not (tmp_path / "prepared").exists()


def test_a_lesion_mark_away_from_an_automatic_femur_is_refused_by_prepare(tmp_path, monkeypatch):
    """Without a femur mask in the manifest, prepare checks the marks against the femur it finds."""
    import metsynth.bone
    from metsynth.prepare import PrepareConfig, prepare_case

    manifest = _cohort_with_a_stray_mark(tmp_path / "cohort")
    edit_manifest(manifest, lambda d: d["cases"][1].pop("femur_mask"))
    case = load_cohort(manifest).case("M01")
    femur = Volume.read(tmp_path / "cohort" / "femur" / "M01.nii.gz")
    monkeypatch.setattr(metsynth.bone, "segment_femur", lambda image, side=None, config=None: femur)
    with pytest.raises(InputError, match=r"case M01: .* from the femur \(found automatically\)"):
        prepare_case(case, PrepareConfig())
    clean = Volume.read(tmp_path / "cohort" / "lesions" / "M01.nii.gz")
    clean.array[:5, :5, :5] = 0  # the stray mark removed
    clean.write(tmp_path / "cohort" / "lesions" / "M01_clean.nii.gz")
    edit_manifest(manifest, lambda d: d["cases"][1].update(lesion_masks=[{"path": "lesions/M01_clean.nii.gz"}]))
    assert "femur" in prepare_case(load_cohort(manifest).case("M01"), PrepareConfig())  # marks on the bone: fine


def test_cohort_check_reports_every_problem_of_a_case(tiny_cohort):
    """A case whose femur mask lies on another grid and whose lesion mask holds 0/2: both said, not
    only the first."""
    root = tiny_cohort.parent
    femur = Volume.read(root / "femur" / "M01.nii.gz")
    Volume(femur.array, femur.spacing, (0.0, 0.0, 0.0), femur.direction).write(root / "femur" / "M01.nii.gz")
    lesion = Volume.read(root / "lesions" / "M01.nii.gz")
    lesion.with_array(lesion.array * 2).write(root / "lesions" / "M01.nii.gz")
    with pytest.raises(InputError) as err:
        check_cohort(load_cohort(tiny_cohort))
    message = str(err.value)
    assert message.startswith("2 problem(s) in cohort 'tiny'")
    assert "femur mask is not on the grid of its image" in message and "is not binary (values 0, 2)" in message
