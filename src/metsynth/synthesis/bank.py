"""The lesion bank: every connected lesion of every metastatic case, as a small patch.

``metsynth lesions extract PREPARED_MANIFEST --out BANK`` writes::

    BANK/bank.json                       entries, skipped lesions, settings, source manifest
    BANK/patches/<case>-L<k>_image.nii.gz   intensity patch (lesion bounding box + margin)
    BANK/patches/<case>-L<k>_mask.nii.gz    that lesion's mask only (other lesions removed)

For each case with role ``metastatic`` one annotation is used (``case.reference_lesion(
annotator)``: the named annotator's first round, else the reference one). Its connected
components (``connectivity`` 6, 18 or 26) are numbered ``L1, L2, ...`` in scan order; a
component of at most ``min_lesion_mm3`` is listed under ``skipped`` with its size, never silently
dropped (numbers are kept, so ids do not change with the threshold). Each entry records the
source case, the annotator, the volume in mm^3, the centroid (voxel index and world mm), the
femoral region (majority of its voxels, from the case's femur mask; ``unknown`` without one),
the lesion radius and the intensity mean, standard deviation and robust standard deviation
(1.4826 x MAD, the reference for relative noise: bits of cortex inside a mask do not inflate it)
inside the mask. Test-only cases are never used as donors.

``bank.json`` also records the intensity units of the cohort the lesions came from
(``intensity``: ``units`` "standardized" with the ``hu_window`` that `prepare` mapped to [-1, 1],
or "HU" for a raw cohort, and the voxel ``spacing``), so that :func:`check_bank_matches` can
refuse to paste lesions into a cohort of other units or another spacing (a bank cut from raw HU
scans pasted into [-1, 1] images gives lesions a thousand times too bright). Banks written before
this record are judged from what they hold: the ``hu_window`` they recorded, else the lesions'
intensities (inside [-1, 1]: standardized, window unknown; beyond: HU), with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from .. import __version__
from ..config import Settings
from ..errors import InputError
from ..fileio import files_index, files_stamp, read_json, remove_stale_temps, write_json
from ..outdir import FILE_INDEX, OutputFolder, recorded_changes
from ..volume import Volume

log = logging.getLogger(__name__)

__all__ = ["BankConfig", "BankEntry", "LesionBank", "bank_intensity", "check_bank_matches", "cohort_intensity",
           "extract_bank", "load_bank"]

BANK_FILE = "bank.json"
REEXTRACT = "re-extract the bank with `metsynth lesions extract PREPARED_MANIFEST --out {root} --force`"


class BankConfig(Settings):
    """Settings of ``metsynth lesions extract``."""

    annotator: str | None = Field(
        None, description="Annotator whose masks are used (first round); None: the case's reference annotation.")
    min_lesion_mm3: float = Field(
        16.0, ge=0, description="Lesions of at most this volume (mm^3) are skipped (paper: 16 mm^3, "
        "26 voxels at 0.85 mm).")
    margin_mm: float = Field(4.0, ge=0, description="Margin of intensity context kept around each lesion, mm.")
    connectivity: Literal[6, 18, 26] = Field(
        26, description="Voxel connectivity defining separate lesions (6 faces, 18 edges, 26 corners).")


@dataclass
class BankEntry:
    """One lesion of the bank (paths relative to the bank folder)."""

    id: str
    case: str
    annotator: str
    component: int
    voxels: int
    volume_mm3: float
    centroid_index: list[float]
    centroid_world: list[float]
    bbox: list[list[int]]  # [[z0, z1], [y0, y1], [x0, x1]] in the case's grid, end exclusive
    region: str
    radius_mm: float
    intensity_mean: float
    intensity_std: float
    intensity_robust_std: float  # 1.4826 x median absolute deviation: the lesion's texture, not its outliers
    spacing: list[float]
    image: str
    mask: str
    surface_contact: float | None = None  # share of its shell outside its femur (FemurSite.contact_of); None: no mask
    root: Path | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("root")
        return data

    def load(self) -> tuple[Volume, Volume]:
        """The intensity patch and the lesion mask (as Volumes)."""
        if self.root is None:
            raise InputError(f"bank entry {self.id}: no bank folder known; load it with load_bank()")
        image = Volume.read(self.root / self.image)
        mask = Volume.read(self.root / self.mask)
        return image, mask

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image float32, mask bool)`` arrays of the patch."""
        image, mask = self.load()
        return image.array.astype(np.float32, copy=False), mask.array.astype(bool)


@dataclass
class LesionBank:
    """A loaded bank: entries in a fixed order, skipped lesions and provenance."""

    root: Path
    entries: list[BankEntry]
    skipped: list[dict[str, Any]]
    info: dict[str, Any]

    def entry(self, entry_id: str) -> BankEntry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise InputError(f"{self.root}: no lesion {entry_id!r} in the bank")

    @property
    def digest(self) -> str:
        """Fingerprint of bank.json (changes whenever the bank is re-extracted differently)."""
        return hashlib.sha256((self.root / BANK_FILE).read_bytes()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.entries)


def load_bank(path: str | os.PathLike) -> LesionBank:
    """Read ``bank.json`` (``path`` is the bank folder or the file itself)."""
    path = Path(path)
    root = path.parent if path.name == BANK_FILE else path
    file = root / BANK_FILE
    if not file.is_file():
        raise InputError(f"{root}: not a lesion bank (no {BANK_FILE}); create one with "
                         "`metsynth lesions extract PREPARED_MANIFEST --out FOLDER`")
    data = read_json(file, what="a lesion bank", fix=REEXTRACT.format(root=root))
    try:
        entries = [BankEntry(**e, root=root.resolve()) for e in data["entries"]]
    except (KeyError, TypeError) as err:
        raise InputError(f"{file}: malformed bank file ({type(err).__name__}: {err}); it is truncated or not a "
                         f"lesion bank: {REEXTRACT.format(root=root)}") from None
    for e in entries:  # every patch is there before anything uses the bank
        for rel in (e.image, e.mask):
            if not (root / rel).is_file():
                raise InputError(f"{root / rel}: lesion {e.id} of the bank is missing its file; re-extract the bank "
                                 "with `metsynth lesions extract` (or restore the file)")
    return LesionBank(root.resolve(), entries, list(data.get("skipped", [])),
                      {k: v for k, v in data.items() if k not in ("entries", "skipped")})


def _structure(connectivity: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def extract_bank(manifest: str | os.PathLike, out_dir: str | os.PathLike, config: BankConfig | None = None,
                 force: bool = False, progress: bool = True, replace_other: bool = False) -> LesionBank:
    """Extract every lesion of the metastatic cases of a (prepared) cohort into ``out_dir``.

    A folder holding a bank of another cohort, other settings or donor files written again since
    is refused unless ``force`` or ``replace_other`` (:class:`metsynth.outdir.OutputFolder`)."""
    from scipy import ndimage

    from ..cohort import load_case, load_cohort
    from .placement import FemurSite

    config = config or BankConfig()
    cohort = load_cohort(manifest)
    manifest_path = Path(manifest)
    if manifest_path.is_dir():
        manifest_path = manifest_path / "cohort.yaml"
    out = Path(out_dir)
    # the metastatic cases' files as they are now: a preparation that wrote them again changes the stamp
    donor_paths = [p for case in cohort.by_role("metastatic")
                   for p in (case.image, case.femur_mask, *(a.path for a in case.lesion_masks))]
    settings = {"config": config.model_dump(mode="json"),
                "cohort_digest": hashlib.sha256(manifest_path.read_bytes()).hexdigest()[:16],
                "donor_files": files_stamp(donor_paths), FILE_INDEX: {"donor_files": files_index(donor_paths)}}
    # every case is read, checked and cut into patches (small, kept in memory) before anything is
    # written: a case that cannot be read leaves no folder behind
    cases = cohort.by_role("metastatic")
    if not cases:
        raise InputError(f"{manifest_path}: no case with role 'metastatic'; the bank needs cases with lesion masks")
    entries: list[BankEntry] = []
    skipped: list[dict[str, Any]] = []
    patches: list[tuple[str, Volume]] = []  # (name in the bank, volume), written once all cases are read
    structure = _structure(config.connectivity)
    iterator = cases
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(cases, desc="lesion bank", unit="case", leave=False)
    for case in iterator:
        annotation = case.reference_lesion(config.annotator)
        if annotation is None:
            skipped.append({"case": case.id, "component": None, "reason": "no lesion mask"})
            continue
        loaded = load_case(case, annotator=config.annotator)
        image, lesion = loaded.image, loaded.lesion
        if lesion is None:  # cannot happen: reference_lesion returned an annotation
            continue
        site = FemurSite.from_mask(loaded.femur.array, image.spacing, image.direction) if loaded.femur else None
        labels, n = ndimage.label(lesion.array.astype(bool), structure=structure)
        sp = np.asarray(image.spacing)
        margin = np.ceil(config.margin_mm / sp).astype(int)
        objects = ndimage.find_objects(labels)
        for k in range(1, n + 1):
            box = objects[k - 1]
            comp = labels[box] == k
            voxels = int(comp.sum())
            mm3 = voxels * image.voxel_volume_mm3
            lesion_id = f"{case.id}-L{k}"
            if mm3 <= config.min_lesion_mm3:
                skipped.append({"id": lesion_id, "case": case.id, "component": k, "voxels": voxels,
                                "volume_mm3": round(mm3, 3),
                                "reason": f"volume {mm3:.1f} mm^3 <= min_lesion_mm3 {config.min_lesion_mm3:g}"})
                continue
            lo = np.maximum([s.start for s in box] - margin, 0)
            hi = np.minimum([s.stop for s in box] + margin, image.shape)
            patch = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            mask = (labels[patch] == k).astype(np.uint8)
            values = image.array[patch]
            local = np.argwhere(mask)
            idx = local + lo
            centroid = local.mean(axis=0) + lo
            radius = float(np.max(np.linalg.norm((local + lo - centroid) * sp, axis=1))) + 0.5 * float(sp.mean())
            inside = values[mask.astype(bool)].astype(np.float64)
            origin = tuple(float(x) for x in image.index_to_world(lo))
            img_name = f"patches/{lesion_id}_image.nii.gz"
            mask_name = f"patches/{lesion_id}_mask.nii.gz"
            patches.append((img_name, Volume(np.ascontiguousarray(values), image.spacing, origin, image.direction)))
            patches.append((mask_name, Volume(mask, image.spacing, origin, image.direction)))
            entries.append(BankEntry(
                id=lesion_id, case=case.id, annotator=annotation.annotator, component=k, voxels=voxels,
                volume_mm3=round(mm3, 3), centroid_index=[round(float(c), 3) for c in centroid],
                centroid_world=[round(float(c), 3) for c in image.index_to_world(centroid)],
                bbox=[[int(s.start), int(s.stop)] for s in box],
                region=site.majority_region(idx) if site is not None else "unknown",
                radius_mm=round(radius, 3), intensity_mean=float(inside.mean()), intensity_std=float(inside.std()),
                intensity_robust_std=float(1.4826 * np.median(np.abs(inside - np.median(inside)))),
                spacing=[float(s) for s in image.spacing], image=img_name, mask=mask_name,
                surface_contact=round(site.contact_of(idx), 4) if site is not None else None, root=out.resolve(),
            ))
    if not entries:
        raise InputError(
            f"{manifest_path}: no lesion above {config.min_lesion_mm3:g} mm^3 in the metastatic cases "
            f"({len(skipped)} skipped); check the lesion masks or lower min_lesion_mm3")
    # an interrupted extraction leaves patches and no bank.json: it is extracted again
    OutputFolder(out, "a lesion bank", BANK_FILE, outputs=("patches",), finished_marker=BANK_FILE,
                 ignore=("patches",)).claim(lambda record: recorded_changes(record, settings), force=force,
                                            replace_other=replace_other)
    (out / "patches").mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    for name, volume in patches:
        volume.write(out / name)
    prepared = getattr(cohort, "prepared", None)
    intensity = cohort_intensity(cohort)
    if intensity["spacing"] is None:  # a raw cohort: the lesions' own spacing when they share one
        spacings = {tuple(e.spacing) for e in entries}
        intensity["spacing"] = list(spacings.pop()) if len(spacings) == 1 else None
    write_json(out / BANK_FILE, {
        "metsynth_version": __version__,
        "cohort": str(manifest_path.resolve()),
        "cohort_name": cohort.name,
        **settings,
        "hu_window": list(prepared.hu_window) if prepared is not None else None,
        "intensity": intensity,
        "entries": [e.to_dict() for e in entries],
        "skipped": skipped,
    })
    log.info("lesion bank: %d lesions from %d cases, %d skipped -> %s", len(entries), len(cases), len(skipped), out)
    return load_bank(out)


# ----------------------------------------------------------------------------- units and spacing
def cohort_intensity(cohort: Any) -> dict[str, Any]:
    """The units of a cohort's images: ``{"units", "hu_window", "spacing"}`` from its ``prepared:``
    record (standardized [-1, 1]), or HU with no window and no common spacing for a raw cohort."""
    prepared = getattr(cohort, "prepared", None)
    if prepared is None:
        return {"units": "HU", "hu_window": None, "spacing": None}
    return {"units": "standardized", "hu_window": [float(v) for v in prepared.hu_window],
            "spacing": [float(v) for v in prepared.spacing]}


def bank_intensity(bank: LesionBank) -> tuple[dict[str, Any], str]:
    """The units of a bank's lesions and how they are known: ``(record, "recorded" | reason)``.

    Banks extracted before bank.json recorded ``intensity`` are judged from their ``hu_window``
    (set when the cohort was prepared) or else from the lesions' intensities: inside [-1, 1]
    they are standardized (window unknown), beyond it they are HU.
    """
    recorded = bank.info.get("intensity")
    if isinstance(recorded, dict) and recorded.get("units") in ("HU", "standardized"):
        return dict(recorded), "recorded"
    spacings = {tuple(float(v) for v in e.spacing) for e in bank.entries}
    spacing = list(spacings.pop()) if len(spacings) == 1 else None
    window = bank.info.get("hu_window")
    if window is not None:
        return ({"units": "standardized", "hu_window": [float(v) for v in window], "spacing": spacing},
                "inferred from the HU window bank.json records")
    means = [abs(float(e.intensity_mean)) for e in bank.entries]
    stds = [float(e.intensity_std) for e in bank.entries]
    if means and max(means) <= 1.0 + 1e-6 and max(stds) <= 1.0:
        return ({"units": "standardized", "hu_window": None, "spacing": spacing},
                "inferred from the lesions' intensities, all inside [-1, 1]; its HU window is unknown")
    return ({"units": "HU", "hu_window": None, "spacing": spacing},
            "inferred from the lesions' intensities, which go beyond [-1, 1]")


def _describe(record: dict[str, Any]) -> str:
    if record["units"] == "HU":
        text = "raw (HU, not prepared)"
    elif record.get("hu_window") is not None:
        lo, hi = record["hu_window"]
        text = f"prepared ([-1, 1] from the HU window {lo:g}..{hi:g})"
    else:
        text = "prepared ([-1, 1], HU window unknown)"
    if record.get("spacing") is not None:
        text += " at " + "x".join(f"{v:g}" for v in record["spacing"]) + " mm"
    return text


def check_bank_matches(bank: LesionBank, cohort: Any, manifest: str | os.PathLike,
                       allow_unprepared: bool = False) -> None:
    """Refuse to paste ``bank``'s lesions into ``cohort`` when their units or spacing differ.

    The recipient cohort must be prepared (``metsynth prepare``), with the HU window and spacing
    of the cohort the bank was extracted from. ``allow_unprepared`` accepts a raw cohort when the
    bank's lesions are raw HU too (spacings are then compared volume by volume at synthesis).
    Raises one-line :class:`InputError`s naming both files and what to do.
    """
    bank_file = bank.root / BANK_FILE
    record, how = bank_intensity(bank)
    target = cohort_intensity(cohort)
    manifest = Path(manifest)
    origin = bank.info.get("cohort")
    fix = (f"re-extract the bank from this cohort (`metsynth lesions extract {manifest} --out NEW_BANK`)"
           + (f" or synthesize into the cohort it came from ({origin})" if origin else ""))
    if target["units"] == "HU":
        if not allow_unprepared:
            raise InputError(
                f"{manifest}: cohort is not prepared (no 'prepared:' record: raw scans in their own units and "
                f"spacing), so the lesions of {bank_file} ({_describe(record)}) cannot be checked against it; "
                f"run `metsynth prepare {manifest} --out PREPARED` and synthesize into PREPARED/cohort.yaml with a "
                "bank extracted from it (or allow a raw cohort explicitly with --unprepared)")
        if record["units"] != "HU":
            raise InputError(f"{bank_file} does not fit cohort {manifest}: the bank's lesions are {_describe(record)} "
                             f"but the cohort is {_describe(target)}; {fix}")
        return
    mismatch = None
    if record["units"] != "standardized":
        mismatch = "their intensity units differ"
    elif record.get("hu_window") is not None and not np.allclose(record["hu_window"], target["hu_window"]):
        mismatch = "their HU windows differ"
    else:
        off = [e for e in bank.entries if not np.allclose(e.spacing, target["spacing"], rtol=1e-3)]
        if off:
            record = {**record, "spacing": list(off[0].spacing)}
            mismatch = f"their voxel sizes differ ({len(off)} of {len(bank)} lesions)"
    if mismatch is not None:
        where = "" if how == "recorded" else f" ({how})"
        raise InputError(f"{bank_file} does not fit cohort {manifest}, {mismatch}: the bank's lesions are "
                         f"{_describe(record)}{where} but the cohort is {_describe(target)}; {fix}")
    if record.get("hu_window") is None:
        log.warning("%s: an older bank without a record of its HU window (%s); the window of cohort %s cannot be "
                    "checked against it; %s to record it", bank_file, how, manifest, fix)
