"""Issue 16, item 14: what a user can fix is one line naming the file or value and the fix, never a
traceback, and a refused command writes nothing and changes nothing.

One table of cases, each run through the real command line (Typer's CliRunner, in this process,
so that a case can monkeypatch the operating system's answer). As root, ``chmod`` does not stop
writes, so the unwritable, read-only and full-disk cases make ``os.access``/``os.statvfs`` or
``os.replace`` give the answer such a folder or disk gives (EACCES, EROFS, ENOSPC); the
path-is-a-file cases use real files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from helpers import write_tiny_cohort
from metsynth.cli import app

EXE = Path(sys.executable).with_name("metsynth")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Small inputs, shared by every case (each case checks that it changes none of them)."""
    root = tmp_path_factory.mktemp("cli-errors")
    write_tiny_cohort(root / "cohort", n_healthy=1, n_metastatic=2)
    (root / "afile").write_text("I am a file\n")
    (root / "a-folder").mkdir()
    (root / "link-to-M01.nii.gz").symlink_to(root / "cohort" / "images" / "M01.nii.gz")
    # a manifest saved as Latin-1 (an accented name)
    text = (root / "cohort" / "cohort.yaml").read_text(encoding="utf-8").replace("name: tiny", "name: Hôpital", 1)
    (root / "cohort" / "latin1.yaml").write_bytes(text.encode("latin-1"))
    # an image where a manifest is expected, under the manifest's kind of name
    (root / "scan.yaml").write_bytes((root / "cohort" / "images" / "M01.nii.gz").read_bytes())
    (root / "bad-syntax.yaml").write_text("start_timestep: [1, 2\nddim_steps: 3\n")
    (root / "python-tag.yaml").write_text("start_timestep: !!python/object/apply:os.system ['echo hi']\n")
    # a bank whose bank.json was cut short (a crash or a full disk during an older write)
    bank = root / "bank"
    bank.mkdir()
    full = json.dumps({"entries": [{"id": "L0", "case": "M01", "image": "patches/L0_image.nii.gz",
                                    "mask": "patches/L0_mask.nii.gz"}], "skipped": []}, indent=2)
    (bank / "bank.json").write_text(full[: len(full) // 2])
    (root / "garbage-splits.json").write_bytes(b"\x89PNG\r\n\x1a\n not splits at all")
    (root / "text-splits.json").write_text("fold 0: M01\nfold 1: M02\n")
    # an earlier bank folder whose patches/ is a file: the clash is found while writing, not before
    (root / "clash").mkdir()
    (root / "clash" / "patches").write_text("not a folder\n")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: path -> sha256 of the bytes (or 'folder')."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        out[key] = "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


Patch = Callable[[pytest.MonkeyPatch, Path], None]


def _refuse_replace(code: int, strerror: str) -> Patch:
    """``os.replace`` into ``root`` fails with ``code`` (a folder that refuses the final rename)."""

    def patch(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        real = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).is_relative_to(root):
                raise OSError(code, strerror, os.fspath(src), None, os.fspath(dst))
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)

    return patch


def _unwritable(read_only: bool) -> Patch:
    """``root`` answers like a folder without write permission, or one on a read-only disk."""

    def patch(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        real_access, real_statvfs = os.access, os.statvfs

        def access(path, mode, *args, **kwargs):
            if Path(path) == root and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)

        class Flags:  # statvfs's answer, with the read-only flag set
            def __init__(self, st):
                self._st = st
                self.f_flag = st.f_flag | (os.ST_RDONLY if read_only else 0)

            def __getattr__(self, name):
                return getattr(self._st, name)

        monkeypatch.setattr(os, "access", access)
        monkeypatch.setattr(os, "statvfs", lambda path: Flags(real_statvfs(path)))

    return patch


@dataclass
class Case:
    """One refused command: its arguments (``{root}`` is the inputs' folder) and what its one
    error line must say (``{root}`` again)."""

    id: str
    args: list[str]
    says: list[str]
    patch: Patch | None = None
    marks: list = field(default_factory=list)


def _no_gpu_mark():
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    return pytest.mark.skipif(has_gpu, reason="this machine has a GPU: --accelerator gpu runs")


CASES = [
    # --out is a file, or under one: refused before anything is written
    Case("out-folder-is-a-file", ["phantom", "-o", "{root}/afile", "--size", "tiny", "--healthy", "1",
                                  "--metastatic", "0"],
         ["{root}/afile", "is a file", "choose another --out"]),
    Case("out-parent-is-a-file", ["prepare", "{root}/cohort/cohort.yaml", "-o", "{root}/afile/prepared"],
         ["{root}/afile/prepared", "{root}/afile is a file", "choose another --out"]),
    Case("out-file-is-a-folder", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/a-folder", "--folds", "2"],
         ["{root}/a-folder", "is a folder", "path of a file"]),
    Case("out-file-under-a-file", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/afile/splits.json",
                                   "--folds", "2"],
         ["{root}/afile/splits.json", "{root}/afile is a file"]),
    # a file where the command makes a folder inside --out: found while writing (last resort)
    Case("subfolder-is-a-file", ["lesions", "extract", "{root}/cohort/cohort.yaml", "-o", "{root}/clash"],
         ["{root}/clash/patches", "is a file where a folder is needed", "choose another --out"]),
    # unwritable / read-only folders: before anything is written, and while writing
    Case("out-folder-not-writable", ["lesions", "extract", "{root}/cohort/cohort.yaml", "-o", "{root}/newbank"],
         ["{root}/newbank", "not writable", "permission denied"], _unwritable(read_only=False)),
    Case("out-folder-read-only", ["phantom", "-o", "{root}/ph", "--size", "tiny"],
         ["{root}/ph", "read-only file system", "writable disk"], _unwritable(read_only=True)),
    Case("write-permission-denied", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/new-splits.json",
                                     "--folds", "2"],
         ["{root}/new-splits.json", "permission denied"], _refuse_replace(errno.EACCES, "Permission denied")),
    Case("write-read-only-fs", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/new-splits.json", "--folds", "2"],
         ["{root}/new-splits.json", "read-only", "choose another --out"],
         _refuse_replace(errno.EROFS, "Read-only file system")),
    Case("disk-full", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/new-splits.json", "--folds", "2"],
         ["disk full writing {root}/new-splits.json", "free space or choose another --out"],
         _refuse_replace(errno.ENOSPC, "No space left on device")),
    # an output file that is an input: refused before the input is overwritten (the same name, or a link)
    Case("femur-out-is-the-image", ["femur", "{root}/cohort/images/M01.nii.gz", "-o",
                                    "{root}/cohort/images/M01.nii.gz"],
         ["{root}/cohort/images/M01.nii.gz", "is also an input", "choose another --out"]),
    Case("femur-out-is-a-link-to-the-image", ["femur", "{root}/cohort/images/M01.nii.gz", "-o",
                                              "{root}/link-to-M01.nii.gz"],
         ["{root}/link-to-M01.nii.gz", "is also an input", "choose another --out"]),
    Case("splits-out-is-the-manifest", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/cohort/cohort.yaml",
                                        "--folds", "2"],
         ["{root}/cohort/cohort.yaml", "is also an input", "choose another --out"]),
    # inputs that are not what they should be
    Case("manifest-not-utf8", ["cohort", "check", "{root}/cohort/latin1.yaml"],
         ["{root}/cohort/latin1.yaml", "not UTF-8", "save the file as UTF-8"]),
    Case("manifest-not-utf8-prepare", ["prepare", "{root}/cohort/latin1.yaml", "-o", "{root}/prepared"],
         ["{root}/cohort/latin1.yaml", "not UTF-8", "save the file as UTF-8"]),
    Case("manifest-is-an-image", ["cohort", "check", "{root}/cohort/images/M01.nii.gz"],
         ["{root}/cohort/images/M01.nii.gz is an image, not a cohort manifest", "see `metsynth cohort --help`"]),
    Case("manifest-is-an-image-named-yaml", ["prepare", "{root}/scan.yaml", "-o", "{root}/prepared"],
         ["{root}/scan.yaml is an image, not a cohort manifest (a YAML file listing cases)"]),
    Case("splits-too-few-cases-for-folds", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/new-splits.json",
                                            "--folds", "5"],
         ["cohort 'tiny' has 2 patient groups for --folds 5", "lower --folds to at most 2"]),
    Case("femur-image-not-found", ["femur", "{root}/no-such-ct.nii.gz", "-o", "{root}/femur.nii.gz"],
         ["file not found: {root}/no-such-ct.nii.gz; check the path"]),
    Case("harmonize-config-yaml-syntax", ["harmonize", "{root}/synthetic", "-c", "{root}/model.pt", "-o",
                                          "{root}/harmonized", "--preset", "tiny",
                                          "--config", "{root}/bad-syntax.yaml"],
         ["{root}/bad-syntax.yaml", "invalid YAML at line 2", "fix the syntax"]),
    Case("harmonize-config-python-tag", ["harmonize", "{root}/synthetic", "-c", "{root}/model.pt", "-o",
                                         "{root}/harmonized", "--preset", "tiny", "--config", "{root}/python-tag.yaml"],
         ["{root}/python-tag.yaml", "!!python/object/apply:os.system", "line 1", "plain value"]),
    Case("bank-json-truncated", ["synthesize", "--cohort", "{root}/cohort/cohort.yaml", "--bank", "{root}/bank",
                                 "-o", "{root}/synthetic", "--preset", "tiny", "--unprepared"],
         ["{root}/bank/bank.json", "truncated or not a lesion bank", "metsynth lesions extract"]),
    Case("bank-json-truncated-extract", ["lesions", "extract", "{root}/cohort/cohort.yaml", "-o", "{root}/bank"],
         ["{root}/bank/bank.json", "truncated or not a lesion bank", "--force"]),
    Case("splits-json-binary", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/garbage-splits.json",
                                "--folds", "2"],
         ["{root}/garbage-splits.json", "not UTF-8", "delete it"]),
    Case("splits-json-not-json", ["splits", "{root}/cohort/cohort.yaml", "-o", "{root}/text-splits.json",
                                  "--folds", "2"],
         ["{root}/text-splits.json", "not valid JSON", "delete it"]),
    Case("accelerator-gpu-without-gpu", ["train", "{root}/cohort/cohort.yaml", "-o", "{root}/seg", "--preset",
                                         "tiny", "--accelerator", "gpu", "--max-epochs", "1"],
         ["accelerator='gpu'", "--accelerator auto"], marks=[_no_gpu_mark()]),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_refused_in_one_line_with_nothing_written(case: Case, root: Path, monkeypatch: pytest.MonkeyPatch):
    before = snapshot(root)
    args = ["--quiet", *(a.format(root=root) for a in case.args)]
    if case.patch is not None:
        case.patch(monkeypatch, root)
    result = CliRunner().invoke(app, args)
    monkeypatch.undo()
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}, {result.exception!r}:\n{output}"
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    others = [line for line in output.splitlines() if line.strip() and not line.startswith(("error:", "(details:"))]
    assert not others, output  # the error is the one line (and where its traceback is kept)
    for text in case.says:
        assert text.format(root=root) in errors[0], errors[0]
    assert snapshot(root) == before, "the refused command wrote or changed files"


@pytest.mark.parametrize("args, names", [
    (["cohort", "check", "{root}/cohort/latin1.yaml"], "{root}/cohort/latin1.yaml"),
    (["phantom", "-o", "{root}/afile/sub", "--size", "tiny"], "{root}/afile"),
])
def test_installed_command_prints_one_line(args, names, root: Path):
    """The same through the installed ``metsynth`` executable: stderr is the error line and the
    log line, the exit status 2."""
    if not EXE.exists():
        pytest.skip(f"{EXE} not installed")
    before = snapshot(root)
    proc = subprocess.run([str(EXE), "--quiet", *(a.format(root=root) for a in args)], capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("(details: "), proc.stderr
    assert names.format(root=root) in lines[0]
    assert snapshot(root) == before


def test_errors_keep_one_traceback_file_not_one_each(tmp_path, monkeypatch):
    """Each error's traceback replaces the last one in one file per user (a file each piled up in /tmp)."""
    import re
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    paths = []
    for name in ("first.yaml", "second.yaml"):
        result = CliRunner().invoke(app, ["cohort", "check", str(tmp_path / name)])
        assert result.exit_code == 2
        paths.append(re.search(r"\(details: (.+)\)", result.output).group(1))
    assert paths[0] == paths[1] and Path(paths[0]).parent == tmp_path
    assert "second.yaml" in Path(paths[1]).read_text() and "first.yaml" not in Path(paths[1]).read_text()
    assert [p.name for p in tmp_path.iterdir()] == [Path(paths[0]).name]


def test_missing_input_file_is_named_as_given_and_absolute(root: Path, monkeypatch: pytest.MonkeyPatch):
    """No manifest involved: 'file not found: X' with X as typed and its absolute form, no hint
    about manifests, and the splits error names the flags (not the study's config keys)."""
    monkeypatch.chdir(root)
    before = snapshot(root)
    result = CliRunner().invoke(app, ["--quiet", "femur", "cohort/images/nope.nii.gz", "-o", "f.nii.gz"])
    assert result.exit_code == 2
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert line == (f"error: file not found: cohort/images/nope.nii.gz (absolute path {root}/cohort/images/"
                    "nope.nii.gz); check the path"), line
    result = CliRunner().invoke(app, ["--quiet", "splits", "cohort/cohort.yaml", "-o", "s.json", "--folds", "3"])
    assert result.exit_code == 2 and "--folds" in result.output
    assert "n_folds" not in result.output and "group_by" not in result.output, result.output
    assert snapshot(root) == before
