"""Training sets, balanced patch sampling and seeded augmentation.

Training sets
    :func:`build_training_set` lists the volumes of one training: ``real`` (the prepared
    cohort's metastatic cases outside test fold k), ``synthetic`` and ``harmonized`` (the
    kept volumes of those sets' ``index.csv``, filtered by the leakage filter of
    :mod:`metsynth.evaluation.splits` so that no volume whose donor lesion comes from a case of
    test fold k remains), any mix of them, and ``online`` (fresh synthetic volumes drawn on the
    fly), alone or mixed with the others: an epoch then draws from every listed source, the share
    of online patches set by ``online_share`` (default: proportional, as an offline mix would do;
    see :class:`PatchSampler`). ``limit`` keeps N of the synthetic/harmonized volumes (the size
    study: 100 / 500 / 2000 / all) as the first N of one seeded permutation, so smaller sets are
    nested in larger ones. A few real training-fold cases (``val_cases``) are held out for validation, chosen
    by the seed alone, so every model of a fold is validated on the same cases.

Patches
    Volumes are unpacked once to ``.npy`` files in a cache folder and memory-mapped, so a
    patch reads only its own voxels. Each patch is described by :class:`PatchParams`, drawn
    from a generator seeded by ``(seed, epoch, index)`` (independent of the number of workers
    or processes) and then applied deterministically by :func:`extract_patch`: centre (on a
    lesion voxel for the positive share, on background otherwise), flips, rotation, isotropic
    scaling, Gaussian noise and a gamma contrast change. Rotation and scaling sample the patch
    directly from the volume (no empty corners).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..fileio import atomic_path, files_stamp, read_json, write_json
from ..synthesis.sets import fold_volumes, read_set
from ..volume import Volume
from .presets import SOURCES, AugmentConfig, SegmentationConfig

log = logging.getLogger(__name__)

AIR = -1.0  # standardized intensity of the low end of the HU window: the padding value
SYNTHETIC_SOURCES = ("synthetic", "harmonized")


# ======================================================================= training sets
@dataclass(frozen=True)
class TrainingVolume:
    """One volume of a training or validation set."""

    key: str                   # "<source>/<id>", unique in a training set
    source: str                # real | synthetic | harmonized
    image: str                 # absolute paths (str: JSON- and pickle-friendly)
    label: str
    case: str                  # real case id, or the synthetic volume id
    donor_case: str | None = None
    healthy_case: str | None = None
    femur: str | None = None


@dataclass
class TrainingSet:
    """The volumes of one training (and its validation cases), saved as ``training_set.json``."""

    sources: tuple[str, ...]
    train: list[TrainingVolume]
    val: list[TrainingVolume]
    fold: int | None = None
    test_cases: list[str] = field(default_factory=list)
    dropped_leaking: int = 0
    limit: int | None = None
    spacing: tuple[float, float, float] | None = None
    hu_window: tuple[float, float] | None = None
    online: dict[str, Any] | None = None  # settings of the on-the-fly synthesis

    @property
    def has_synthetic(self) -> bool:
        return any(s != "real" for s in self.sources)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.train:
            out[item.source] = out.get(item.source, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        data["counts"] = self.counts()
        return data

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_dict())

    def files_stamp(self) -> str | None:
        """:func:`metsynth.fileio.files_stamp` of the set's images and labels (changes when a stage
        writes one of them again; None when one is missing)."""
        return files_stamp(p for item in self.train + self.val for p in (item.image, item.label))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingSet":
        data = read_json(path)
        data.pop("counts", None)
        data["sources"] = tuple(data["sources"])
        data["train"] = [TrainingVolume(**v) for v in data["train"]]
        data["val"] = [TrainingVolume(**v) for v in data["val"]]
        for key in ("spacing", "hu_window"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def parse_sources(sources: str | Sequence[str]) -> tuple[str, ...]:
    """``"real,synthetic"`` or a list -> a validated tuple (order kept, duplicates dropped)."""
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.replace("+", ",").split(",") if s.strip()]
    out: list[str] = []
    for s in sources:
        if s not in SOURCES:
            import difflib

            hint = difflib.get_close_matches(s, SOURCES, n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(f"unknown training source '{s}' (choose from {', '.join(SOURCES)}){extra}")
        if s not in out:
            out.append(s)
    if not out:
        raise ConfigError("no training source given; use e.g. --sources real or --sources synthetic,real")
    return tuple(out)


def build_training_set(
    cohort,
    sources: str | Sequence[str] = ("real",),
    *,
    fold: int | None = None,
    splits: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    harmonized: str | os.PathLike | None = None,
    limit: int | None = None,
    val_cases: int = 3,
    seed: int = 0,
    bank: str | os.PathLike | None = None,
    synthesis: dict[str, Any] | str | os.PathLike | None = None,
) -> TrainingSet:
    """List the volumes of a training on ``sources`` for CV fold ``fold``.

    ``cohort`` is a prepared :class:`~metsynth.cohort.Cohort` (or its manifest path): its real
    cases give the ``real`` source and the validation cases. With ``fold`` set, ``splits``
    (``splits.json``) is required: cases of test fold ``fold`` are excluded from training and
    validation, and the synthetic/harmonized indexes go through the leakage filter. Without a
    fold, every metastatic case is available (no test set; a warning says so if synthetic data
    are used, since nothing can leak without a test set).

    ``online`` needs ``bank`` (the lesion bank folder) and optionally ``synthesis`` (synthesis
    settings: a mapping or YAML); its donors are restricted to the real training cases of the
    fold (never test or validation cases) and its recipients are the cohort's healthy cases.
    """
    from ..cohort import Cohort, load_cohort

    sources = parse_sources(sources)
    manifest = None
    if not isinstance(cohort, Cohort):
        manifest = Path(cohort)
        manifest = manifest / "cohort.yaml" if manifest.is_dir() else manifest
        cohort = load_cohort(manifest)
    elif cohort.root is not None:
        manifest = Path(cohort.root) / "cohort.yaml"
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of synthetic volumes, got {limit}")
    if limit is not None and not any(s in SYNTHETIC_SOURCES for s in sources):
        raise ConfigError(f"limit={limit} applies to synthetic/harmonized volumes, but sources are "
                          f"{', '.join(sources)}; add 'synthetic' or 'harmonized' or drop --limit")
    if fold is not None and splits is None:
        raise ConfigError(f"fold {fold} needs the CV splits file (splits.json, `metsynth splits`); pass --splits")

    test_cases: list[str] = []
    excluded: set[str] = set()
    split_obj = None
    if fold is not None:
        from ..evaluation.splits import load_fold_splits

        split_obj = load_fold_splits(splits, fold, cohort)
        test_cases = sorted(split_obj.test(fold))
        excluded = split_obj.excluded_from_training(fold)

    candidates = [c for c in cohort.by_role("metastatic") if c.id not in excluded]
    candidates.sort(key=lambda c: c.id)
    if val_cases >= len(candidates) and val_cases > 0:
        raise ConfigError(
            f"val_cases={val_cases} but only {len(candidates)} real metastatic case(s) are outside the test "
            "fold; lower val_cases (a few cases are enough for early stopping)")
    order = np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(len(candidates))
    val_ids = {candidates[i].id for i in order[:val_cases]}
    real_items = [_real_volume(c) for c in candidates]
    val = [v for v in real_items if v.case in val_ids]
    train: list[TrainingVolume] = []
    if "real" in sources:
        train += [v for v in real_items if v.case not in val_ids]

    sets = []
    for source, folder in (("synthetic", synthetic), ("harmonized", harmonized)):
        if source not in sources:
            continue
        if folder is None:
            raise ConfigError(f"source '{source}' needs its folder: pass --{source} DIR (with index.csv)")
        sets.append(read_set(folder, source))
    chosen = fold_volumes(sets, split_obj, fold, known_cases=[c.id for c in cohort.cases], limit=limit, seed=seed)
    dropped = chosen.dropped_leaking
    if chosen.excluded is not None and len(chosen.excluded):
        first = chosen.excluded.iloc[0]
        log.info("fold %d: %d synthetic/harmonized volume(s) dropped by the leakage filter (e.g. %s: %s)", fold,
                 len(chosen.excluded), first["key"], first["reason"])
    if sets and fold is None:
        log.warning("training on synthetic data without a CV fold: no leakage filter applies (no test set)")
    synthetic_items = [
        TrainingVolume(key=row["key"], source=row["source"], image=row["image"], label=row["label"],
                       case=str(row["volume_id"]), donor_case=str(row["donor_case"]),
                       healthy_case=str(row["healthy_case"]) or None)
        for _, row in chosen.volumes.iterrows()
    ]
    train += synthetic_items

    online = None
    if "online" in sources:
        if bank is None:
            raise ConfigError("source 'online' draws lesions from a lesion bank: pass --bank DIR "
                              "(`metsynth lesions extract`)")
        if manifest is None:
            raise ConfigError("source 'online' needs the cohort's manifest path (pass the path, not a Cohort "
                              "object without root)")
        if isinstance(synthesis, (str, os.PathLike)):
            from ..config import read_yaml

            synthesis = read_yaml(synthesis)
            synthesis = synthesis.get("synthesis", synthesis)
        donors = sorted(v.case for v in real_items if v.case not in val_ids)
        if not donors:
            raise ConfigError(f"source 'online' has no donor case: fold {fold} leaves no real training case "
                              "outside the test and validation cases")
        online = {"manifest": str(manifest), "bank": str(Path(bank).resolve()), "synthesis": synthesis or {},
                  "donor_cases": donors, "healthy_cases": sorted(c.id for c in cohort.by_role("healthy"))}
    if not train and "online" not in sources:
        raise ConfigError(f"the training set for sources {', '.join(sources)} (fold {fold}) is empty; "
                          "check the cohort roles and the synthetic index")
    prepared = cohort.prepared
    if prepared is None:
        log.warning("cohort %s is not a prepared cohort (no 'prepared:' block); train on the output "
                    "of `metsynth prepare` so intensities and spacing match at prediction", cohort.name)
    return TrainingSet(
        sources=sources, train=train, val=val, fold=fold, test_cases=test_cases, dropped_leaking=dropped,
        limit=limit, spacing=tuple(prepared.spacing) if prepared else None,
        hu_window=tuple(prepared.hu_window) if prepared else None,
        online=online,
    )


def _real_volume(case) -> TrainingVolume:
    ann = case.reference_lesion()
    if ann is None:
        raise InputError(f"case {case.id}: metastatic case without a lesion mask; add it to the manifest")
    return TrainingVolume(
        key=f"real/{case.id}", source="real", image=str(case.image), label=str(ann.path), case=case.id,
        femur=str(case.femur_mask) if case.femur_mask else None,
    )


# ======================================================================= the volume cache
@dataclass
class CachedVolume:
    """Memory-mapped arrays of one training volume and where its lesion voxels are."""

    image: np.ndarray          # float32 [z, y, x], memory-mapped
    label: np.ndarray          # uint8 [z, y, x], memory-mapped
    lesion_voxels: np.ndarray  # int32 (n, 3)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


def _cache_key(item: TrainingVolume) -> str:
    parts = []
    for p in (item.image, item.label):
        st = os.stat(p)
        parts.append(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def cache_volume(item: TrainingVolume, cache_dir: str | os.PathLike) -> Path:
    """Unpack ``item`` into ``cache_dir`` (once; keyed by paths, sizes and mtimes); return its stem."""
    cache_dir = Path(cache_dir)
    for p in (item.image, item.label):
        if not Path(p).is_file():
            raise InputError(f"{item.key}: file {p} not found; was the training data moved or deleted?")
    stem = cache_dir / _cache_key(item)
    if Path(f"{stem}.json").exists():
        return stem
    image = Volume.read(item.image)
    label = Volume.read(item.label)
    diff = image.grid_mismatch(label)
    if diff is not None:
        raise InputError(f"{item.label}: label is not on the grid of its image {item.image} ({diff}); "
                         "masks must share the image's grid")
    img = np.asarray(image.array, dtype=np.float32)
    if not np.all(np.isfinite(img)):
        raise InputError(f"{item.image}: image has NaN or infinite voxels; fix the file")
    lbl = (np.asarray(label.array) > 0).astype(np.uint8)
    for suffix, array in (("image", img), ("label", lbl), ("lesion", np.argwhere(lbl).astype(np.int32))):
        with atomic_path(Path(f"{stem}_{suffix}.npy")) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    write_json(f"{stem}.json", {"key": item.key, "image": item.image, "label": item.label,
                                "shape": list(img.shape), "lesion_voxels": int(lbl.sum())})
    return stem


def _cache_task(task: tuple[TrainingVolume, str]) -> str:
    return str(cache_volume(task[0], task[1]))


def cache_volumes(items: Sequence[TrainingVolume], cache_dir: str | os.PathLike, workers: int = 1,
                  progress: bool = True) -> dict[str, str]:
    """Unpack every volume (in parallel with ``workers`` processes); ``{key: stem}``."""
    from ..parallel import map_tasks

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    todo = [(item, str(cache_dir)) for item in items]
    stems = {}
    for item, _ in todo:  # already cached: no task
        stem = Path(cache_dir) / _cache_key(item)
        if Path(f"{stem}.json").exists():
            stems[item.key] = str(stem)
    rest = [t for t in todo if t[0].key not in stems]
    if rest:
        for stem in map_tasks(_cache_task, rest, workers=max(1, workers), progress=progress,
                              desc="unpacking volumes", key=lambda t: t[0].key):
            stems[read_json(f"{stem}.json")["key"]] = stem
    return stems


def open_cached(stem: str | os.PathLike) -> CachedVolume:
    stem = str(stem)
    return CachedVolume(
        image=np.load(f"{stem}_image.npy", mmap_mode="r"),
        label=np.load(f"{stem}_label.npy", mmap_mode="r"),
        lesion_voxels=np.load(f"{stem}_lesion.npy"),
    )


# ======================================================================= patches
@dataclass(frozen=True)
class PatchParams:
    """Everything random about one training patch (drawn first, then applied)."""

    center: tuple[int, int, int]
    positive: bool
    flips: tuple[bool, bool, bool] = (False, False, False)
    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # about the z, y, x axes
    scale: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0
    gamma: float = 1.0

    @property
    def is_spatially_plain(self) -> bool:
        return self.scale == 1.0 and not any(self.angles_deg)


def draw_center(shape: Sequence[int], patch_size: Sequence[int], label: np.ndarray, lesion_voxels: np.ndarray,
                positive: bool, rng: np.random.Generator, tries: int = 50) -> tuple[tuple[int, int, int], bool]:
    """A patch centre: a random lesion voxel if ``positive`` (and the volume has lesions), else a
    random background voxel; moved so that the patch lies inside the volume where it fits.
    Returns (centre, whether it is a lesion-centred patch)."""
    shape = np.asarray(shape)
    if positive and len(lesion_voxels):
        center = np.asarray(lesion_voxels[rng.integers(len(lesion_voxels))], dtype=int)
    else:
        positive = False
        center = None
        for _ in range(tries):
            cand = rng.integers(0, shape)
            if not label[tuple(cand)]:
                center = cand
                break
        if center is None:  # (almost) all lesion: any voxel
            center = rng.integers(0, shape)
    half = np.asarray(patch_size) // 2
    lo = half
    hi = shape - (np.asarray(patch_size) - half)
    fits = shape >= np.asarray(patch_size)
    center = np.where(fits, np.clip(center, lo, np.maximum(lo, hi)), shape // 2)
    return tuple(int(c) for c in center), bool(positive)  # type: ignore[return-value]


def draw_patch_params(cached: CachedVolume, patch_size: Sequence[int], positive: bool,
                      augment: AugmentConfig, rng: np.random.Generator) -> PatchParams:
    """Draw a patch's centre and augmentation from ``rng`` (nothing is applied here)."""
    center, positive = draw_center(cached.shape, patch_size, cached.label, cached.lesion_voxels, positive, rng)
    if not augment.enabled:
        return PatchParams(center=center, positive=positive)
    flips = tuple(bool(a in augment.flip_axes and rng.random() < augment.flip_prob) for a in range(3))
    angles = (0.0, 0.0, 0.0)
    if rng.random() < augment.rotate_prob:
        angles = tuple(float(a) for a in rng.uniform(-augment.rotate_deg, augment.rotate_deg, size=3))
    scale = 1.0
    if rng.random() < augment.scale_prob:
        scale = float(rng.uniform(*augment.scale_range))
    noise_std = 0.0
    if rng.random() < augment.noise_prob:
        noise_std = float(rng.uniform(*augment.noise_std))
    gamma = 1.0
    if rng.random() < augment.contrast_prob:
        gamma = float(rng.uniform(*augment.gamma_range))
    return PatchParams(center=center, positive=positive, flips=flips, angles_deg=angles,  # type: ignore[arg-type]
                       scale=scale, noise_std=noise_std, noise_seed=int(rng.integers(2**31)), gamma=gamma)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about the array axes z, y, x (in that order), acting on (z, y, x) vectors."""
    a, b, c = (math.radians(v) for v in angles_deg)
    rz = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _padded_block(array: np.ndarray, lo: np.ndarray, hi: np.ndarray, fill: float) -> np.ndarray:
    """``array[lo:hi]`` (per axis), padded with ``fill`` where the box leaves the volume."""
    shape = np.asarray(array.shape)
    src_lo = np.clip(lo, 0, shape)
    src_hi = np.clip(hi, 0, shape)
    out = np.full(tuple(hi - lo), fill, dtype=array.dtype)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - lo
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
            array[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
    return out


def extract_patch(image: np.ndarray, label: np.ndarray, params: PatchParams,
                  patch_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``params``: the (rotated, scaled, flipped) patch around the centre, then noise and
    contrast. Returns ``(image float32, label uint8)`` of shape ``patch_size``. Deterministic."""
    from scipy import ndimage

    size = np.asarray(patch_size, dtype=int)
    center = np.asarray(params.center, dtype=int)
    if params.is_spatially_plain:
        lo = center - size // 2
        img = _padded_block(image, lo, lo + size, AIR).astype(np.float32, copy=False)
        lbl = _padded_block(label, lo, lo + size, 0).astype(np.uint8, copy=False)
    else:
        # output offset o (voxels, from the patch centre) samples the volume at centre + M @ o
        matrix = rotation_matrix(params.angles_deg) / params.scale
        half_out = (size - 1) / 2.0
        reach = np.abs(matrix) @ half_out
        lo = np.floor(center - reach).astype(int) - 1
        hi = np.ceil(center + reach).astype(int) + 2
        block_img = _padded_block(image, lo, hi, AIR).astype(np.float32, copy=False)
        block_lbl = _padded_block(label, lo, hi, 0).astype(np.float32)
        offset = (center - lo) - matrix @ half_out
        img = ndimage.affine_transform(block_img, matrix, offset=offset, output_shape=tuple(size), order=1,
                                       mode="constant", cval=AIR, prefilter=False)
        lbl = ndimage.affine_transform(block_lbl, matrix, offset=offset, output_shape=tuple(size), order=1,
                                       mode="constant", cval=0.0, prefilter=False)
        lbl = (lbl >= 0.5).astype(np.uint8)
    flip_axes = tuple(a for a, f in enumerate(params.flips) if f)
    if flip_axes:
        img = np.flip(img, flip_axes)
        lbl = np.flip(lbl, flip_axes)
    img = np.array(img, dtype=np.float32, copy=True)
    if params.gamma != 1.0:  # gamma on [-1, 1] mapped to [0, 1]: a fixed range, no per-patch statistics
        unit = np.clip((img + 1.0) * 0.5, 0.0, 1.0)
        img = (unit ** np.float32(params.gamma)) * 2.0 - 1.0
    if params.noise_std > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(img.shape, dtype=np.float32)
        img += noise * np.float32(params.noise_std)
    return img.astype(np.float32, copy=False), np.ascontiguousarray(lbl, dtype=np.uint8)


def patch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of patch ``index`` of ``epoch``: the same on 1 worker or 100."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


# ======================================================================= online synthesis
class OnlineSource:
    """Fresh synthetic volumes from :class:`metsynth.synthesis.dataset.SyntheticLesionDataset`:
    ``source(epoch, volume) -> (image, label)``, deterministic in ``(seed, volume, epoch)``.
    Picklable (the synthesis dataset starts each worker with empty caches)."""

    def __init__(self, settings: dict[str, Any], seed: int) -> None:
        try:
            from ..synthesis.compose import SynthesisConfig
            from ..synthesis.dataset import SyntheticLesionDataset
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ConfigError(f"source 'online' needs metsynth.synthesis.dataset ({err}); train on a synthesized "
                              "folder instead (--sources synthetic --synthetic DIR)") from None
        config = SynthesisConfig.from_dict(settings.get("synthesis") or {}, source="online synthesis settings")
        self.dataset = SyntheticLesionDataset(
            settings["manifest"], settings["bank"], config, length=1, seed=seed,
            healthy_cases=settings.get("healthy_cases"), donor_cases=settings.get("donor_cases"))

    def __call__(self, epoch: int, volume: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.dataset.sample(int(volume), int(epoch))
        return sample["image"], sample["label"]


# ======================================================================= torch datasets
class PatchSampler:
    """Yields the patch keys of one epoch: ``(epoch, index, volume, positive)``.

    Each training volume appears ``patches_per_volume`` times in a seeded random order (or, with
    ``patches_per_epoch``, the epoch has that many keys, drawn by whole shuffled passes over the
    volumes so that every volume appears as evenly as the length allows); exactly
    ``round(n * pos_fraction)`` keys ask for a lesion-centred patch (balanced sampling). Under
    DDP each rank takes every ``world``-th key (and all ranks the same count), so Lightning's
    own distributed sampler is not needed (``use_distributed_sampler=False``). Lightning calls
    :meth:`set_epoch` at the start of each epoch, also after a resume.

    Online volumes (``online``): volume ``n_volumes + j`` is the j-th fresh synthetic volume of
    the epoch (``online_volumes`` of them); its patches stay together (one synthesis each).
    Alone (``n_volumes == 0``) the epoch is ``online_volumes x patches_per_volume`` patches.
    Mixed with ``n_volumes`` listed volumes (real, synthetic, harmonized), the epoch draws from
    both, see :meth:`split`: ``online_share`` of its patches from the fresh volumes, the rest by
    whole shuffled passes over the listed volumes; ``online_share=None`` is the proportion of an
    offline mix (the fresh volumes count like as many listed volumes, every volume gives
    ``patches_per_volume`` patches). Listed patches and blocks of online patches are shuffled
    together, from the same seeded generator.
    """

    def __init__(self, n_volumes: int, patches_per_volume: int, pos_fraction: float, seed: int,
                 online: bool = False, online_volumes: int = 0, patches_per_epoch: int | None = None,
                 online_share: float | None = None) -> None:
        self.n_volumes = n_volumes
        self.patches_per_epoch = patches_per_epoch
        self.patches_per_volume = patches_per_volume
        self.pos_fraction = pos_fraction
        self.seed = seed
        self.online = online
        self.online_volumes = online_volumes
        if online_share is not None and not 0 < online_share < 1:
            raise ConfigError(f"online_share must be between 0 and 1 (exclusive), got {online_share}")
        self.online_share = online_share
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def mixed(self) -> bool:
        """Online volumes mixed with listed ones."""
        return self.online and self.n_volumes > 0

    def split(self) -> tuple[int, int]:
        """``(listed patches, online patches)`` of every epoch.

        Without ``patches_per_epoch`` the online part is ``online_volumes x patches_per_volume``
        and the listed part follows from the share (proportional: ``n_volumes x
        patches_per_volume``); with it, that many patches are split by the share. Each part has
        at least one patch in a mix."""
        ppv, n_on, n_off = self.patches_per_volume, self.online_volumes, self.n_volumes
        if not self.online:
            return self.patches_per_epoch if self.patches_per_epoch is not None else n_off * ppv, 0
        if not self.mixed:
            return 0, n_on * ppv
        share = self.online_share if self.online_share is not None else n_on / (n_on + n_off)
        if self.patches_per_epoch is not None:
            total = max(2, self.patches_per_epoch)
            online = min(total - 1, max(1, int(round(total * share))))
            return total - online, online
        online = n_on * ppv
        listed = n_off * ppv if self.online_share is None else max(1, int(round(online * (1 - share) / share)))
        return listed, online

    @property
    def total(self) -> int:
        return sum(self.split())

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def epoch_keys(self) -> list[tuple[int, int, int, bool]]:
        """Every key of the epoch (all ranks together)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, 3]))
        n = self.total
        if self.mixed:
            volumes = self._mixed_volumes(rng)
        elif self.online:  # volume v = a fresh synthetic volume; its patches stay together
            volumes = np.repeat(np.arange(self.online_volumes), self.patches_per_volume)
        elif self.patches_per_epoch is not None:  # fixed epoch length: whole shuffled passes, then part of one
            passes = -(-n // self.n_volumes)
            volumes = np.concatenate([rng.permutation(self.n_volumes) for _ in range(passes)])[:n]
        else:
            volumes = rng.permutation(np.repeat(np.arange(self.n_volumes), self.patches_per_volume))
        positive = np.zeros(n, dtype=bool)
        positive[rng.permutation(n)[: int(round(n * self.pos_fraction))]] = True
        return [(self.epoch, i, int(v), bool(p)) for i, (v, p) in enumerate(zip(volumes, positive))]

    def _mixed_volumes(self, rng: np.random.Generator) -> np.ndarray:
        listed, online = self.split()
        passes = -(-listed // self.n_volumes)
        units = [[int(v)] for v in np.concatenate([rng.permutation(self.n_volumes) for _ in range(passes)])[:listed]]
        base, extra = divmod(online, self.online_volumes)  # online patches spread over the fresh volumes
        units += [[self.n_volumes + j] * (base + (j < extra)) for j in range(self.online_volumes) if base + (j < extra)]
        return np.asarray([v for k in rng.permutation(len(units)) for v in units[k]], dtype=int)

    def keys(self) -> list[tuple[int, int, int, bool]]:
        keys = self.epoch_keys()
        rank, world = self._rank_world()
        per_rank = len(keys) // world if world > 1 else len(keys)
        return keys[rank::world][:per_rank]

    def source_counts(self, sources: Sequence[str]) -> dict[str, int]:
        """Patches of the current epoch per source; ``sources[v]`` is the source of listed volume v."""
        counts: dict[str, int] = {}
        for _, _, volume, _ in self.epoch_keys():
            source = sources[volume] if volume < self.n_volumes else "online"
            counts[source] = counts.get(source, 0) + 1
        return counts

    def describe(self, sources: Sequence[str]) -> dict[str, Any]:
        """What a training records of its sampling (``result.json``): patches per epoch and source,
        and with online volumes the share of online patches and the setting it came from."""
        counts = self.source_counts(sources)
        out: dict[str, Any] = {"patches_per_epoch": counts}
        if self.online:
            out["online_volumes_per_epoch"] = self.online_volumes
            out["online_share"] = counts.get("online", 0) / max(1, sum(counts.values()))
            out["online_share_setting"] = (self.online_share if self.online_share is not None
                                           else "proportional" if self.mixed else "online only")
        return out

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        rank, world = self._rank_world()
        return self.total // world if world > 1 else self.total


def patch_sampler(training_set: TrainingSet, config: SegmentationConfig) -> PatchSampler:
    """The :class:`PatchSampler` of a training on ``training_set`` with ``config`` (the one
    :func:`~metsynth.segmentation.train.train_segmentation` uses)."""
    return PatchSampler(len(training_set.train), config.patches_per_volume, config.pos_fraction, config.seed,
                        online="online" in training_set.sources, online_volumes=config.online_volumes_per_epoch,
                        patches_per_epoch=config.patches_per_epoch, online_share=config.online_share)


class PatchDataset:
    """Map-style dataset of training patches, indexed by :class:`PatchSampler` keys.

    Returns ``{"image": float32 [1, *patch], "label": uint8 [1, *patch], "positive": bool}``
    as torch tensors.
    """

    def __init__(self, stems: Sequence[str], config: SegmentationConfig, online_source=None) -> None:
        self.stems = list(stems)
        self.patch_size = tuple(config.patch_size)
        self.augment = config.augment
        self.seed = config.seed
        self.online_source = online_source
        self._open: dict[int, CachedVolume] = {}
        self._online_cache: tuple[tuple[int, int], CachedVolume] | None = None

    def __len__(self) -> int:  # informative only; the sampler drives iteration
        return len(self.stems)

    def _volume(self, epoch: int, volume: int) -> CachedVolume:
        if self.online_source is not None and volume >= len(self.stems):  # fresh volume j = volume - listed
            key = (epoch, volume - len(self.stems))
            if self._online_cache is None or self._online_cache[0] != key:
                image, label = self.online_source(*key)
                lbl = (np.asarray(label) > 0).astype(np.uint8)
                self._online_cache = (key, CachedVolume(np.asarray(image, np.float32), lbl,
                                                        np.argwhere(lbl).astype(np.int32)))
            return self._online_cache[1]
        if volume not in self._open:
            if len(self._open) > 64:  # keep file handles bounded
                self._open.clear()
            self._open[volume] = open_cached(self.stems[volume])
        return self._open[volume]

    def __getitem__(self, key):
        import torch

        epoch, index, volume, positive = key
        cached = self._volume(epoch, volume)
        rng = patch_rng(self.seed, epoch, index)
        params = draw_patch_params(cached, self.patch_size, positive, self.augment, rng)
        img, lbl = extract_patch(cached.image, cached.label, params, self.patch_size)
        return {"image": torch.from_numpy(img[None]), "label": torch.from_numpy(lbl[None]),
                "positive": params.positive}


class VolumeDataset:
    """Whole volumes for validation: ``{"image": [1, z, y, x], "label": [1, z, y, x], "key": str}``."""

    def __init__(self, stems: Sequence[str], keys: Sequence[str]) -> None:
        self.stems = list(stems)
        self.keys = list(keys)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int):
        import torch

        cached = open_cached(self.stems[index])
        return {"image": torch.from_numpy(np.array(cached.image, dtype=np.float32)[None]),
                "label": torch.from_numpy(np.array(cached.label, dtype=np.uint8)[None]),
                "key": self.keys[index]}


__all__ = [
    "AIR", "CachedVolume", "OnlineSource", "PatchDataset", "PatchParams", "PatchSampler", "TrainingSet", "TrainingVolume",
    "VolumeDataset", "build_training_set", "cache_volume", "cache_volumes", "draw_center", "draw_patch_params",
    "extract_patch", "open_cached", "parse_sources", "patch_rng", "patch_sampler", "rotation_matrix",
]
