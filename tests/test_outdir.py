"""The one output-folder rule (metsynth.outdir): every row of its table, and the study using it."""

from __future__ import annotations

import json

import pytest

from metsynth.errors import ConfigError
from metsynth.outdir import OutputFolder, recorded_changes


def _folder(path):
    return OutputFolder(path, "a test run", "record.json", outputs=("out", "*.nii.gz"), finished_marker="done.json",
                        ignore=("cache",))


def _changes(new):
    return lambda record: recorded_changes(record, new)


def _made(path, settings):
    path.mkdir(parents=True, exist_ok=True)
    (path / "record.json").write_text(json.dumps(settings))
    (path / "out").mkdir()
    (path / "out" / "a.txt").write_text("a")
    (path / "b.nii.gz").write_bytes(b"b")
    (path / "done.json").write_text("{}")
    (path / "notes.txt").write_text("the user's")


def test_a_new_or_empty_folder_is_claimed(tmp_path):
    assert _folder(tmp_path / "new").claim(_changes({})).state == "new"
    assert (tmp_path / "new").is_dir()
    (tmp_path / "empty" / "cache").mkdir(parents=True)  # ignored names and temporary files do not count
    (tmp_path / "empty" / ".tmp-123-x").write_text("")
    assert _folder(tmp_path / "empty").claim(_changes({})).state == "new"


@pytest.mark.parametrize("flags", [{}, {"force": True}, {"replace_other": True}])
def test_the_same_run_resumes_and_keeps_its_outputs(tmp_path, flags):
    _made(tmp_path, {"seed": 1})
    claim = _folder(tmp_path).claim(_changes({"seed": 1}), **flags)
    assert claim.state == "same" and claim.resumes
    assert (tmp_path / "out" / "a.txt").exists() and (tmp_path / "b.nii.gz").exists()
    assert _folder(tmp_path).finished()


def test_another_run_is_refused_naming_the_differences_and_nothing_changes(tmp_path):
    _made(tmp_path, {"seed": 1, "net": {"channels": [8, 16]}})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as info:
        _folder(tmp_path).claim(_changes({"seed": 2, "net": {"channels": [8, 16]}}))
    assert str(info.value) == (f"{tmp_path}: holds a test run of other settings or inputs (seed: 1 -> 2); "
                               "choose another --out folder, or pass --force to replace it")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("flags", [{"force": True}, {"replace_other": True}])
def test_another_run_is_replaced_with_force_or_by_its_owner(tmp_path, flags):
    _made(tmp_path, {"seed": 1})
    claim = _folder(tmp_path).claim(_changes({"seed": 2}), **flags)
    assert claim.state == "replaced" and claim.changes == ("seed: 1 -> 2",) and not claim.resumes
    # the stage's outputs and finished marker are gone; the record (rewritten by the stage) and other files stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "record.json"]
    assert not _folder(tmp_path).finished()


def test_an_unreadable_record_is_another_run(tmp_path):
    _made(tmp_path, {})
    (tmp_path / "record.json").write_text("{trunc")
    with pytest.raises(ConfigError, match=r"record.json: truncated or not a test run \(not valid JSON"):
        _folder(tmp_path).claim(_changes({}))
    assert _folder(tmp_path).claim(_changes({}), replace_other=True).state == "replaced"


def test_a_folder_of_other_files_needs_force_even_for_the_study(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    message = (f"{tmp_path}: holds files that are not a test run (mine.txt; no record.json); choose an empty or "
               "new --out folder, or pass --force to write there anyway")
    for flags in ({}, {"replace_other": True}):
        with pytest.raises(ConfigError) as info:
            _folder(tmp_path).claim(_changes({}), **flags)
        assert str(info.value) == message
    claim = _folder(tmp_path).claim(_changes({}), force=True, replace_other=True)
    assert claim.state == "foreign" and (tmp_path / "mine.txt").read_text() == "x"  # nothing removed


def test_recorded_changes_reads_yaml_and_json_and_fills_settings_older_records_lacked(tmp_path):
    (tmp_path / "r.yaml").write_text("synthesis:\n  seed: 0\n  sizes: [1, 2]\nold_key: 1\n")
    new = {"synthesis": {"seed": 0, "sizes": (1, 2), "image_storage": "float32"}}
    assert recorded_changes(tmp_path / "r.yaml", new) == ["synthesis.image_storage: None -> 'float32'"]
    assert recorded_changes(tmp_path / "r.yaml", new, {"synthesis": {"image_storage": "float32"}}) == []
    (tmp_path / "n.yaml").write_text("synthesis:\n  placement:\n    tries: 5\n")  # a nested setting added later
    nested = {"synthesis": {"placement": {"tries": 5, "match": 0}}}
    assert recorded_changes(tmp_path / "n.yaml", nested) == ["synthesis.placement.match: None -> 0"]
    assert recorded_changes(tmp_path / "n.yaml", nested, {"synthesis": {"placement": {"match": 0}}}) == []
    assert recorded_changes(tmp_path / "n.yaml", {"synthesis": {"placement": {"tries": 5, "match": 8}}},
                            {"synthesis": {"placement": {"match": 0}}}) == ["synthesis.placement.match: 0 -> 8"]
    (tmp_path / "r.json").write_text(json.dumps({"seed": 1}))
    assert recorded_changes(tmp_path / "r.json", {"seed": 2}) == ["seed: 1 -> 2"]
    (tmp_path / "l.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a mapping"):
        recorded_changes(tmp_path / "l.json", {})


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        _folder(tmp_path / "f").claim(_changes({}), force=True)


def test_finished_marker_is_written_atomically_and_read_back(tmp_path):
    folder = _folder(tmp_path)
    assert not folder.finished()
    folder.mark_finished({"steps": 3})
    assert folder.finished() and folder.read_finished() == {"steps": 3}
    assert not list(tmp_path.glob(".tmp-*"))


def test_the_study_replaces_its_own_outputs_but_not_a_folder_of_other_files(tmp_path):
    """Issue 15 item 1: the study no longer forces its stages."""
    from metsynth.experiment import experiment_preset, run_experiment
    from metsynth.layout import RunLayout

    config = experiment_preset("tiny")
    run = tmp_path / "run"
    layout = RunLayout(run)
    layout.bank.mkdir(parents=True)
    (layout.bank / "my_notes.txt").write_text("not metsynth's")
    with pytest.raises(ConfigError, match=r"bank: holds files that are not a lesion bank \(my_notes.txt; no bank"):
        run_experiment(config, run, until="bank", progress=False)
    assert (layout.bank / "my_notes.txt").read_text() == "not metsynth's"
    (layout.bank / "my_notes.txt").unlink()
    run_experiment(config, run, until="bank", progress=False)
    first = json.loads((layout.bank / "bank.json").read_text())
    # other settings: the study replaces the bank it made, without --force
    edited = config.model_copy(update={"bank": config.bank.merged(margin_mm=config.bank.margin_mm + 2)})
    run_experiment(edited, run, until="bank", progress=False)
    second = json.loads((layout.bank / "bank.json").read_text())
    assert second["config"]["margin_mm"] == first["config"]["margin_mm"] + 2


def test_a_changed_digest_is_said_in_words_not_as_two_hashes():
    from metsynth.outdir import differences

    assert differences({"inputs": "725f9c80544dfff53154", "seed": 1}, {"inputs": "5393a10c6c5291fb83e4", "seed": 1}) \
        == ["inputs: other content (other files, or the same files written again since)"]
    assert differences({"inputs": None}, {"inputs": "5393a10c6c5291fb83e4"}) \
        == ["inputs: other content (other files, or the same files written again since)"]  # a file was missing
    assert differences({"name": "abc"}, {"name": "abd"}) == ["name: 'abc' -> 'abd'"]  # not a digest: as it is


def test_a_refusal_names_the_input_files_that_changed(tmp_path):
    """The audit's case: predictions of one scan, then another scan into the same folder. The record's
    files_index says which files: added, no longer given, written again (with both times), missing."""
    from metsynth.fileio import files_index, files_stamp
    from metsynth.outdir import FILE_INDEX

    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("M001.nii.gz", "M002.nii.gz", "H001.nii.gz"):
        (scans / name).write_bytes(b"x" * 10)

    def settings(*names):
        paths = [scans / n for n in names]
        return {"inputs": files_stamp(paths), FILE_INDEX: {"inputs": files_index(paths)}, "grid": "input"}

    run = tmp_path / "pred"
    _folder(run).claim(_changes(settings("H001.nii.gz", "M001.nii.gz")))
    (run / "record.json").write_text(json.dumps(settings("H001.nii.gz", "M001.nii.gz")))
    assert _folder(run).claim(_changes(settings("H001.nii.gz", "M001.nii.gz"))).state == "same"  # the index aside

    with pytest.raises(ConfigError) as info:
        _folder(run).claim(_changes(settings("M002.nii.gz", "M001.nii.gz")))
    assert "(scans/H001.nii.gz: no longer an input; scans/M002.nii.gz: a new input); choose another" in str(info.value)
    assert "725f" not in str(info.value) and "other content" not in str(info.value)

    import os

    st = (scans / "M001.nii.gz").stat()
    (scans / "M001.nii.gz").write_bytes(b"y" * 2048)
    os.utime(scans / "M001.nii.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 61 * 10**9))
    (scans / "H001.nii.gz").unlink()
    changes = recorded_changes(run / "record.json", settings("H001.nii.gz", "M001.nii.gz"))
    assert changes[0] == "scans/H001.nii.gz: missing now"
    assert changes[1].startswith("scans/M001.nii.gz: written again since (modified 20") \
        and changes[1].endswith(", 10 B -> 2.0 KiB)"), changes

    # a record from before the index: the stamp's change in words; the index itself is never a difference
    (run / "record.json").write_text(json.dumps({"inputs": "725f9c80544dfff53154", "grid": "input"}))
    assert recorded_changes(run / "record.json", settings("M001.nii.gz")) == \
        ["inputs: other content (other files, or the same files written again since)"]
    (run / "record.json").write_text(json.dumps({**settings("M001.nii.gz"), FILE_INDEX: {}}))
    assert recorded_changes(run / "record.json", settings("M001.nii.gz")) == []


def test_digest_wording_is_kept_to_digests_and_a_foreign_index_is_not_trusted(tmp_path):
    """A setting that only looks like a hash keeps its values; digests under their keys (lists
    included) are said in words; an index of another shape falls back to that sentence."""
    from metsynth.fileio import files_index
    from metsynth.outdir import FILE_INDEX, differences

    assert differences({"name": "deadbeefcafe1234"}, {"name": "0123456789abcdef"}) == \
        ["name: 'deadbeefcafe1234' -> '0123456789abcdef'"]
    assert differences({"model_sha256": ["aaaaaaaaaaaaaaaa"]}, {"model_sha256": ["bbbbbbbbbbbbbbbb"]}) == \
        ["model_sha256: other content (other files, or the same files written again since)"]
    # two raters' files of one name in folders of one name: distinct keys
    for rater in ("raterA", "raterB"):
        (tmp_path / rater / "P001").mkdir(parents=True)
        (tmp_path / rater / "P001" / "lesion.nii.gz").write_bytes(b"x")
    index = files_index([tmp_path / r / "P001" / "lesion.nii.gz" for r in ("raterA", "raterB")])
    assert sorted(index) == ["raterA/P001/lesion.nii.gz", "raterB/P001/lesion.nii.gz"]
    # a record whose index is not [size, mtime] pairs: no traceback, no wrong names
    record = tmp_path / "record.json"
    for broken in ({"a/x.nii.gz": 5}, {"a/x.nii.gz": [10]}, {"a/x.nii.gz": {"size": 10}}, {"a/x.nii.gz": "x"}, []):
        record.write_text(json.dumps({"inputs": "725f9c80544dfff53154", FILE_INDEX: {"inputs": broken}}))
        assert recorded_changes(record, {"inputs": "5393a10c6c5291fb83e4",
                                         FILE_INDEX: {"inputs": {"a/x.nii.gz": [1, 2]}}}) == \
            ["inputs: other content (other files, or the same files written again since)"]
