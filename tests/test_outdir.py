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
