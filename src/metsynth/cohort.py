"""The cohort manifest: which cases exist, their files, roles and annotations.

A manifest is a YAML file (paths relative to its folder)::

    name: my-hospital
    cases:
      - id: M001
        image: images/M001.nii.gz        # NIfTI, NRRD, MHA, or a DICOM series folder
        role: metastatic                 # healthy | metastatic | test
        centre: A                        # optional
        patient: P17                     # optional, groups cases in cross-validation
        side: right                      # optional: left | right | both (default: auto)
        femur_mask: femur/M001.nii.gz    # optional; computed by `prepare` if absent
        lesion_masks:                    # required for metastatic cases
          - {path: lesions/M001.nii.gz}  # annotator "reference", round 1 by default
          - {path: lesions/M001_A1.nii.gz, annotator: A, round: 1, expertise: novice}

``load_cohort`` checks the structure (ids, roles, keys); ``check_cohort`` opens every file and
checks the content (readable, 3D, finite, masks binary and on the image's grid, lesions present
on metastatic cases), reporting every problem at once and writing nothing.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from .config import Settings, read_yaml
from .errors import InputError
from .fileio import write_text
from .volume import Volume, as_mask, check_finite, note_manifest_path

log = logging.getLogger(__name__)

Role = Literal["healthy", "metastatic", "test"]
Side = Literal["left", "right", "both"]
Expertise = Literal["reference", "expert", "novice"]


class LesionAnnotation(Settings):
    """One lesion mask: one annotator's segmentation in one annotation round."""

    path: Path = Field(description="Binary lesion mask on the image's grid.")
    annotator: str = Field("reference", description="Who drew it (e.g. 'A', 'expert1').")
    round: int = Field(1, ge=1, description="Annotation round (intra-operator study: 1, 2, ...).")
    expertise: Expertise = Field("reference", description="reference (ground truth), expert or novice.")


class Case(Settings):
    """One CT volume and everything known about it."""

    id: str = Field(min_length=1, description="Unique case id (used in file names).")
    image: Path
    role: Role
    centre: str = "unknown"
    patient: str | None = Field(None, description="Patient id; cases of one patient share a CV fold.")
    side: Side | None = Field(None, description="Which femur: left, right, both, or auto (None).")
    femur_mask: Path | None = None
    lesion_masks: list[LesionAnnotation] = Field(default_factory=list)
    source: dict[str, Any] | None = Field(None, description="Written by `prepare`: origin of a prepared case.")

    @field_validator("id")
    @classmethod
    def _id_is_file_safe(cls, value: str) -> str:
        bad = set(value) & set('/\\:*?"<>| ')
        if bad:
            raise ValueError(f"case id {value!r} contains {''.join(sorted(bad))!r}; ids become file names")
        return value

    @property
    def group(self) -> str:
        return self.patient or self.id

    def reference_lesion(self, annotator: str | None = None) -> LesionAnnotation | None:
        """The annotation used as ground truth: the named annotator's first round, else the one
        marked ``reference``, else the first listed."""
        if not self.lesion_masks:
            return None
        if annotator is not None:
            rounds = sorted((a for a in self.lesion_masks if a.annotator == annotator), key=lambda a: a.round)
            if not rounds:
                have = sorted({a.annotator for a in self.lesion_masks})
                raise InputError(f"case {self.id}: no lesion mask by annotator {annotator!r} (has {', '.join(have)})")
            return rounds[0]
        for ann in self.lesion_masks:
            if ann.expertise == "reference":
                return ann
        return self.lesion_masks[0]


class PreparedInfo(Settings):
    """Set on cohorts written by ``metsynth prepare``."""

    spacing: tuple[float, float, float]
    hu_window: tuple[float, float]


class Cohort(Settings):
    name: str = "cohort"
    prepared: PreparedInfo | None = None
    cases: list[Case]
    root: Path | None = Field(None, exclude=True, description="Folder of the manifest (set on load).")

    @model_validator(mode="after")
    def _unique_ids(self) -> "Cohort":
        dup = [cid for cid, n in Counter(c.id for c in self.cases).items() if n > 1]
        if dup:
            raise ValueError(f"duplicate case ids: {', '.join(dup)}; every case needs its own id")
        return self

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise InputError(f"no case {case_id!r} in cohort {self.name!r}")

    def by_role(self, *roles: str) -> list[Case]:
        return [c for c in self.cases if c.role in roles]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest with paths relative to its folder (portable), atomically."""
        path = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        base = path.parent.resolve()
        for case, raw in zip(self.cases, data["cases"]):
            raw["image"] = _relative(case.image, base)
            if case.femur_mask is not None:
                raw["femur_mask"] = _relative(case.femur_mask, base)
            for ann, raw_ann in zip(case.lesion_masks, raw.get("lesion_masks", [])):
                raw_ann["path"] = _relative(ann.path, base)
            if not raw.get("lesion_masks"):
                raw.pop("lesion_masks", None)
        return write_text(path, yaml.safe_dump(data, sort_keys=False))


# Image files a manifest is easily confused with (a NIfTI given where cohort.yaml is expected)
_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".img", ".hdr")


def _image_kind(path: Path) -> str | None:
    """What kind of image (or binary) file ``path`` is, from its suffix or first bytes; ``None``
    for anything else (text, to be read as YAML)."""
    name = path.name.lower()
    if any(name.endswith(s) for s in _IMAGE_SUFFIXES):
        return "an image"
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b":  # gzip: a .nii.gz (or another compressed file) under another name
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(352)
        except (OSError, EOFError, zlib.error):
            inner = b""
        return "an image" if _is_image_header(inner) else "a gzip-compressed file"
    if _is_image_header(head):
        return "an image"
    if b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):  # (not UTF-16 text)
        return "a binary file"
    return None


def _is_image_header(head: bytes) -> bool:
    """NIfTI-1/-2, DICOM, NRRD or MetaImage, from a file's first bytes."""
    return (head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] in (b"n+2\0", b"ni2\0")
            or head[128:132] == b"DICM" or head.startswith(b"NRRD000")
            or head.lstrip().startswith((b"ObjectType = Image", b"NDims = ")))


def _refuse_image(path: Path) -> None:
    """One clear line where an image (or another binary file) is given for a manifest, rather
    than a YAML or UTF-8 error about its bytes."""
    kind = _image_kind(path)
    if kind is not None:
        raise InputError(f"{path} is {kind}, not a cohort manifest (a YAML file listing cases); give the "
                         "cohort.yaml instead (see `metsynth cohort --help`)")


def load_cohort(path: str | os.PathLike) -> Cohort:
    """Read and structurally validate a manifest; resolve its paths against its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "cohort.yaml"
    if not path.is_file():
        raise InputError(f"{path}: cohort manifest not found; create one (see README, 'Bring your own "
                         "data') or generate the phantom with `metsynth phantom`")
    _refuse_image(path)
    data = read_yaml(path, error=InputError)
    if "cases" not in data or not isinstance(data["cases"], list) or not data["cases"]:
        raise InputError(f"{path}: the manifest needs a non-empty 'cases:' list")
    base = path.parent.resolve()
    for i, raw in enumerate(data["cases"]):
        if not isinstance(raw, dict):
            raise InputError(f"{path}: case #{i + 1} is not a mapping of keys (id, image, role, ...)")
        for key in ("image", "femur_mask"):
            if raw.get(key):
                raw[key] = _absolute(raw[key], base, path)
        masks = raw.get("lesion_masks") or []
        if isinstance(masks, (str, dict)):
            masks = [masks]
        raw["lesion_masks"] = [
            {**m, "path": _absolute(m["path"], base, path)} if isinstance(m, dict) and "path" in m
            else {"path": _absolute(m, base, path)} if isinstance(m, str) else m
            for m in masks
        ]
    cohort = Cohort.from_dict(data, source=str(path), error=InputError)
    cohort.root = base
    return cohort


# ------------------------------------------------------------------ content checks
@dataclass
class CaseReport:
    """One row of ``metsynth cohort check``."""

    id: str
    role: str
    centre: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    hu_range: tuple[float, float]
    n_annotations: int
    lesion_mm3: float | None
    n_lesions: int | None
    femur_mask: bool


@dataclass
class LoadedCase:
    """A case's volumes, checked: image, femur mask (or None), chosen lesion mask (or None)."""

    case: Case
    image: Volume
    femur: Volume | None
    lesion: Volume | None


def about_case(case_id: str, message: object) -> str:
    """``message`` as a problem of case ``case_id``: prefixed with "case ID: " unless it says it already."""
    text = str(message)
    return text if text.startswith(f"case {case_id}:") else f"case {case_id}: {text}"


def _femur_mask(case: Case, image: Volume) -> Volume:
    femur = as_mask(Volume.read(case.femur_mask), image, what="femur mask")
    if not femur.array.any():
        raise InputError(f"case {case.id}: femur mask {case.femur_mask} is empty; remove it from the "
                         "manifest to have the femur segmented automatically, or fix the file")
    return femur


def _lesion_mask(case: Case, ann: LesionAnnotation, image: Volume, is_reference: bool = True) -> Volume:
    vol = as_mask(Volume.read(ann.path), image, what=f"lesion mask ({ann.annotator}, round {ann.round})")
    if case.role == "metastatic" and not vol.array.any():
        if is_reference:
            raise InputError(f"case {case.id}: lesion mask {ann.path} is empty but the case is 'metastatic'; "
                             "fix the mask, or give the case role 'healthy' if it has no lesion")
        raise InputError(f"case {case.id}: lesion mask {ann.path} ({ann.annotator}, round {ann.round}) is empty "
                         "but the case is 'metastatic'; fix the mask")
    return vol


def load_case(case: Case, annotator: str | None = None, lesion: bool = True) -> LoadedCase:
    """Read a case's image and masks with every content check; raise InputError on the first problem."""
    image = Volume.read(case.image)
    check_finite(image, "image")
    femur = _femur_mask(case, image) if case.femur_mask is not None else None
    ann = case.reference_lesion(annotator) if lesion else None
    lesion_vol = _lesion_mask(case, ann, image) if ann is not None else None
    return LoadedCase(case, image, femur, lesion_vol)


# A lesion component further than this from its femur mask is not a femoral lesion: a mask of
# another scan or side, or a stray mark. Osteolytic lesions break the cortex and may grow into the
# soft tissue beside it, but stay connected to the bone.
MAX_LESION_GAP_MM = 10.0


def check_lesion_on_femur(case: Case, ann: LesionAnnotation, lesion: Volume, femur: Volume, femur_source: str,
                          max_gap_mm: float = MAX_LESION_GAP_MM) -> None:
    """Raise InputError naming the case, the file and the mark when a connected component of
    ``lesion`` lies more than ``max_gap_mm`` from ``femur`` (both on the image's grid).
    ``femur_source`` says where the femur mask came from, for the message."""
    import numpy as np
    from scipy import ndimage

    marks = lesion.array > 0
    bone = femur.array > 0
    if not marks.any() or not bone.any():
        return
    spacing = np.asarray(lesion.spacing)
    where = np.argwhere(marks)
    origin = where.min(0)  # the marks are labelled within their own box (the scan may be large)
    inside = tuple(slice(a, b + 1) for a, b in zip(origin, where.max(0)))
    labels, n = ndimage.label(marks[inside], structure=np.ones((3, 3, 3), bool))
    touching = set(np.unique(labels[bone[inside]]).tolist())
    pad = np.ceil(max_gap_mm / spacing).astype(int) + 1  # any bone within the gap lies in a mark's box + pad
    for k in range(1, n + 1):
        if k in touching:  # overlapping the femur (the usual case): no distance needed
            continue
        voxels = np.argwhere(labels == k) + origin  # the mark's voxels in the scan
        lo = np.maximum(voxels.min(0) - pad, 0)
        hi = np.minimum(voxels.max(0) + pad + 1, marks.shape)
        near = bone[tuple(slice(a, b) for a, b in zip(lo, hi))]
        if not near.any():
            gap = np.inf
        else:
            distance = ndimage.distance_transform_edt(~near, sampling=spacing)
            gap = float(distance[tuple((voxels - lo).T)].min())
        if gap > max_gap_mm:
            break
    else:
        return
    ijk = tuple(int(v) for v in np.round(voxels.mean(0)).astype(int)[::-1])  # as 3D Slicer numbers voxels
    how_far = f"{gap:.1f} mm" if np.isfinite(gap) else f"more than {max_gap_mm:g} mm"
    raise InputError(
        f"case {case.id}: lesion mask {ann.path} ({ann.annotator}, round {ann.round}) marks "
        f"{len(voxels) * lesion.voxel_volume_mm3:.0f} mm3 around voxel (i, j, k) = {ijk}, {how_far} from the femur "
        f"({femur_source}); a femoral lesion touches its femur: check that the mask belongs to this scan and "
        "side (the manifest's image and side), or remove that mark")


def check_cohort(cohort: Cohort, progress: bool = False) -> list[CaseReport]:
    """Open every file of every case and check it; collect all problems, then raise once.

    Reads only; writes nothing.
    """
    from scipy import ndimage

    problems: list[str] = []
    reports: list[CaseReport] = []
    for case in _progress(cohort.cases, progress, "checking cases"):
        if case.role == "metastatic" and not case.lesion_masks:
            problems.append(f"case {case.id}: role 'metastatic' needs at least one entry in "
                            "'lesion_masks' (or use role 'healthy')")
            continue
        found: list[str] = []  # every problem of the case, not only the first

        def attempt(check: Any) -> Any:
            try:
                return check()
            except InputError as err:
                found.append(about_case(case.id, err))
                return None

        image = attempt(lambda: Volume.read(case.image))
        if image is None:  # the masks cannot be checked against a grid that could not be read
            problems += found
            continue
        attempt(lambda: check_finite(image, "image"))
        femur = attempt(lambda: _femur_mask(case, image)) if case.femur_mask is not None else None
        reference = case.reference_lesion()
        lesion = None
        for ann in case.lesion_masks:
            vol = attempt(lambda ann=ann: _lesion_mask(case, ann, image, is_reference=ann is reference))
            if vol is None:
                continue
            if ann is reference:
                lesion = vol
            if femur is not None:  # else prepare checks it on the femur it finds
                attempt(lambda ann=ann, vol=vol: check_lesion_on_femur(case, ann, vol, femur,
                                                                       "the manifest's femur_mask"))
        if found:
            problems += found
            continue
        lesion_mm3 = n_lesions = None
        if lesion is not None:
            lesion_mm3 = float(lesion.array.sum()) * image.voxel_volume_mm3
            n_lesions = int(ndimage.label(lesion.array)[1])
        reports.append(CaseReport(
            id=case.id, role=case.role, centre=case.centre, shape=image.shape,
            spacing=image.spacing, hu_range=(float(image.array.min()), float(image.array.max())),
            n_annotations=len(case.lesion_masks), lesion_mm3=lesion_mm3, n_lesions=n_lesions,
            femur_mask=femur is not None,
        ))
    if problems:
        raise InputError(f"{len(problems)} problem(s) in cohort {cohort.name!r}:\n  " + "\n  ".join(problems))
    return reports


def format_reports(reports: list[CaseReport]) -> str:
    """A plain-text table of case reports."""
    header = ("case", "role", "centre", "shape (z,y,x)", "spacing mm", "HU min..max", "annot", "lesions", "lesion mm3",
              "femur")
    rows = [header]
    for r in reports:
        rows.append((
            r.id, r.role, r.centre, "x".join(map(str, r.shape)), "x".join(f"{s:.2f}" for s in r.spacing),
            f"{r.hu_range[0]:.0f}..{r.hu_range[1]:.0f}", str(r.n_annotations),
            "-" if r.n_lesions is None else str(r.n_lesions),
            "-" if r.lesion_mm3 is None else f"{r.lesion_mm3:.0f}", "yes" if r.femur_mask else "auto",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="case")


def _absolute(value: Any, base: Path, manifest: Path | None = None) -> Any:
    """A path of the manifest made absolute (relative to the manifest's folder ``base``); remembered
    so that a missing file is reported as one the manifest names (:func:`metsynth.volume.check_readable`)."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    p = Path(os.path.expanduser(os.fspath(value)))
    out = p if p.is_absolute() else base / p
    if manifest is not None:
        note_manifest_path(out, manifest, os.fspath(value))
    return out


def _relative(path: Path, base: Path) -> str:
    path = Path(path).resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return os.path.relpath(path, base) if path.anchor == base.anchor else path.as_posix()


def summarize_roles(cohort: Cohort) -> dict[str, int]:
    return dict(Counter(c.role for c in cohort.cases))


__all__ = [
    "Case", "CaseReport", "Cohort", "LesionAnnotation", "LoadedCase", "PreparedInfo",
    "check_cohort", "format_reports", "load_case", "load_cohort", "summarize_roles",
]

