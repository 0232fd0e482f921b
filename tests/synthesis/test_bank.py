"""The lesion bank: one entry per connected lesion, small ones listed as skipped, geometry kept."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from helpers import written_again
from metsynth.cli import app
from metsynth.cohort import load_cohort
from metsynth.errors import ConfigError, InputError
from metsynth.synthesis.bank import BankConfig, extract_bank, load_bank
from metsynth.synthesis.placement import FemurSite
from metsynth.volume import Volume


def test_entries_and_skipped(toy_bank, toy_cohort):
    bank = load_bank(toy_bank)
    assert [e.id for e in bank.entries] == ["M00-L1", "M01-L1"]
    assert {e.case for e in bank.entries} == {"M00", "M01"}
    (skipped,) = bank.skipped
    assert skipped["id"] == "M00-L2" and skipped["volume_mm3"] <= 16 and "min_lesion_mm3" in skipped["reason"]
    regions = {e.id: e.region for e in bank.entries}
    assert regions == {"M00-L1": "shaft", "M01-L1": "head"}
    entry = bank.entry("M00-L1")
    assert entry.annotator == "reference" and entry.volume_mm3 == entry.voxels * 1.0
    assert entry.intensity_std > 0 and 0 < entry.intensity_robust_std < 2 * entry.intensity_std and entry.radius_mm > 4
    assert bank.info["hu_window"] == [-1000.0, 2000.0]
    # how much each lesion touched its femur's surface, from the case's femur mask
    for e in bank.entries:
        case = next(c for c in load_cohort(toy_cohort).cases if c.id == e.case)
        site = FemurSite.from_mask(Volume.read(case.femur_mask).array, tuple(e.spacing))
        local = np.argwhere(Volume.read(toy_bank / e.mask).array)
        lesion = local - local.min(axis=0) + [lo for lo, _ in e.bbox]  # the lesion's voxels in the case's grid
        assert e.surface_contact == pytest.approx(site.contact_of(lesion), abs=1e-3)
        assert 0 <= e.surface_contact < 1
    with pytest.raises(InputError, match="no lesion 'M09-L1' in the bank"):
        bank.entry("M09-L1")


def test_patches_keep_world_geometry(toy_bank, toy_cohort):
    """Each mask patch, put back at its world position, is exactly that lesion of the source mask."""
    bank = load_bank(toy_bank)
    root = toy_cohort.parent
    for entry in bank.entries:
        source = Volume.read(root / "lesions" / f"{entry.case}.nii.gz")
        image = Volume.read(root / "images" / f"{entry.case}.nii.gz")
        patch_img, patch_mask = entry.load()
        corner = np.rint(source.world_to_index(patch_mask.origin)).astype(int)
        box = tuple(slice(c, c + n) for c, n in zip(corner, patch_mask.shape))
        inside = patch_mask.array.astype(bool)
        assert np.array_equal(inside, source.array[box].astype(bool) & inside)
        assert np.array_equal(patch_img.array, image.array[box])
        assert patch_mask.array.sum() == entry.voxels
        np.testing.assert_allclose(source.index_to_world(entry.centroid_index), entry.centroid_world, atol=1e-3)


def test_min_size_and_annotator_settings(toy_cohort, tmp_path):
    bank = extract_bank(toy_cohort, tmp_path / "b", BankConfig(min_lesion_mm3=0), progress=False)
    assert [e.id for e in bank.entries] == ["M00-L1", "M00-L2", "M01-L1"] and not bank.skipped
    with pytest.raises(InputError, match="no lesion mask by annotator 'C'"):
        extract_bank(toy_cohort, tmp_path / "c", BankConfig(annotator="C"), progress=False)


def test_another_configuration_is_refused_unless_forced(toy_cohort, tmp_path):
    extract_bank(toy_cohort, tmp_path / "b", progress=False)
    extract_bank(toy_cohort, tmp_path / "b", progress=False)  # same settings: fine
    with pytest.raises(ConfigError, match=r"holds a lesion bank of other settings or inputs \(config.margin_mm: 4"):
        extract_bank(toy_cohort, tmp_path / "b", BankConfig(margin_mm=8), progress=False)
    bank = extract_bank(toy_cohort, tmp_path / "b", BankConfig(margin_mm=8), force=True, progress=False)
    assert bank.info["config"]["margin_mm"] == 8


def test_a_bank_of_donor_files_written_again_is_another_bank(tmp_path):
    from metsynth.cohort import load_cohort
    from synthesis.synth_toy import write_toy_cohort

    cohort = write_toy_cohort(tmp_path / "cohort")  # its own copy: the files are touched below
    extract_bank(cohort, tmp_path / "b", progress=False)
    donor = load_cohort(cohort).by_role("metastatic")[0]
    written_again(donor.lesion_masks[0].path)  # e.g. the preparation ran again with other settings
    mask = donor.lesion_masks[0].path
    with pytest.raises(ConfigError, match=r"holds a lesion bank of other settings or inputs "
                                          rf"\({mask.parent.name}/{mask.name}: written again since"):
        extract_bank(cohort, tmp_path / "b", progress=False)
    before = load_bank(tmp_path / "b").digest
    after = extract_bank(cohort, tmp_path / "b", force=True, progress=False).digest
    assert after != before  # so that a synthesis made from the old bank is redone too


@pytest.mark.parametrize("spoil", ["nan image of the second case", "lesion mask missing", "unknown annotator"])
def test_an_unusable_case_writes_no_bank_folder(tmp_path, spoil):
    """Every case is read and checked before the bank's folder is made: a bad one (even the last)
    leaves nothing on disk, and the corrected extraction then runs there."""
    from metsynth.cohort import load_cohort
    from synthesis.synth_toy import write_toy_cohort

    cohort = write_toy_cohort(tmp_path / "cohort")
    case = load_cohort(cohort).by_role("metastatic")[-1]
    config = BankConfig()
    if spoil.startswith("nan"):
        vol = Volume.read(case.image)
        array = vol.array.astype(np.float32)
        array[0, 0, 0] = np.nan
        vol.with_array(array).write(case.image)
    elif spoil == "lesion mask missing":
        case.lesion_masks[0].path.unlink()
    else:
        config = BankConfig(annotator="nobody")
    out = tmp_path / "bank"
    with pytest.raises(InputError, match=case.id if spoil != "unknown annotator" else "annotator 'nobody'"):
        extract_bank(cohort, out, config, progress=False)
    assert not out.exists()


def test_not_a_bank(tmp_path):
    with pytest.raises(InputError, match="not a lesion bank"):
        load_bank(tmp_path)


def test_a_bank_missing_a_patch_is_refused_on_load(toy_bank, tmp_path_factory):
    import shutil

    copy = tmp_path_factory.mktemp("bank-copy") / "bank"  # not under the bank's own folder
    shutil.copytree(toy_bank, copy)
    victim = load_bank(copy).entries[0]
    (copy / victim.mask).unlink()
    with pytest.raises(InputError, match=f"lesion {victim.id} of the bank is missing its file"):
        load_bank(copy)


def test_cli_extract(toy_cohort, tmp_path):
    config = tmp_path / "bank.yaml"
    config.write_text(yaml.safe_dump({"bank": {"margin_mm": 2.0}}))
    result = CliRunner().invoke(app, ["--quiet", "lesions", "extract", str(toy_cohort), "--out", str(tmp_path / "b"),
                                      "--config", str(config), "--min-mm3", "20"])
    assert result.exit_code == 0, result.output
    assert "2 lesions from 2 cases, 1 skipped" in result.output
    assert load_bank(tmp_path / "b").info["config"] == {"annotator": None, "min_lesion_mm3": 20.0, "margin_mm": 2.0,
                                                       "connectivity": 26}
    bad = CliRunner().invoke(app, ["lesions", "extract", str(toy_cohort), "--out", str(tmp_path / "c"),
                                   "--min-mm3", "-1"])
    assert bad.exit_code == 2 and "min_lesion_mm3" in bad.output


def test_bank_records_the_units_and_spacing_of_its_cohort(toy_bank, tmp_path):
    from synthesis.synth_toy import write_toy_cohort

    assert load_bank(toy_bank).info["intensity"] == {"units": "standardized", "hu_window": [-1000.0, 2000.0],
                                                     "spacing": [1.0, 1.0, 1.0]}
    raw = write_toy_cohort(tmp_path / "raw", n_healthy=0, n_metastatic=1, prepared=False)
    bank = extract_bank(raw, tmp_path / "b", progress=False)
    assert bank.info["intensity"] == {"units": "HU", "hu_window": None, "spacing": [1.0, 1.0, 1.0]}
