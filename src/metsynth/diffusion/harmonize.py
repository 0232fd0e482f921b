"""Harmonization (``metsynth harmonize``): SDEdit with DDIM on synthetic volumes.

Each volume is noised to ``start_timestep`` (equation 2 of the paper) and denoised with DDIM
through the grid timesteps at or below it (:func:`~metsynth.diffusion.schedule.ddim_timesteps`).
The network's noise estimate for a region larger than one patch is computed window by window
(MONAI ``sliding_window_inference``, Gaussian-weighted blending of overlapping windows) at every
step, so the whole region shares one noise field and one trajectory: no seams.

``region``:

* ``lesion``: a box around each lesion of the label (``lesion_margin_mm`` plus ``feather_mm``,
  grown to at least one patch, overlapping boxes merged) is refined and blended back with a
  weight that is 1 over the lesion and its margin and falls to 0 over ``feather_mm`` towards the
  box border. Voxels outside the boxes are not changed (bit for bit).
* ``volume``: the whole volume is refined (the paper's use).

Determinism: each volume's noise comes from a CPU ``torch.Generator`` seeded with
``SeedSequence([seed, stable_hash(volume_id)])``, so the same settings give the same bytes on CPU
whatever the number of workers, their order or the scheduler: every task runs on the same number
of torch threads (``threads``, 1 by default; floating-point sums in the convolutions depend on
it, so a default of "the cores divided among the workers" gave other bytes for ``--workers 1``
and ``--workers 2``). Parallelism comes from the worker processes. The sidecar records the
threads. GPU kernels are not bit-reproducible in general.

Input: a synthetic set folder (``images/``, ``labels/``, optional ``sidecars/`` and
``index.csv``; any folder with that layout works). Output: the same layout in a new folder;
each sidecar is the synthesis sidecar plus ``harmonization`` (source files, checkpoint sha256,
start timestep, DDIM steps, timesteps, seed, boxes) and ``consistency``
(:mod:`~metsynth.diffusion.consistency`). Files are written atomically, the sidecar last; a rerun
skips finished volumes, unless their synthetic files were written again since (``source_stamp``).

Storage: ``image_storage: int16`` stores one HU per step of the HU window the synthetic set's
cohort was prepared with (the ``intensity`` record of the set's ``config.yaml``), with NIfTI
``scl_slope``/``scl_inter`` (:class:`~metsynth.volume.IntensityScale`); a set without that record
gets a step of 2^-14 of [-1, 1] instead. An int16 synthetic set harmonized to int16 keeps the
stored integers of every voxel the harmonization leaves alone.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import ndimage

from ..config import read_yaml
from ..devices import resolve_device
from ..errors import ConfigError, InputError
from ..fileio import atomic_path, file_sha256, files_stamp, read_json, remove_stale_temps, write_json, write_text
from ..synthesis.sets import finished_sidecar
from ..volume import IntensityScale, Volume, check_finite, storage_scale
from .consistency import check_consistency
from .presets import DiffusionConfig, HarmonizeConfig, check_harmonize
from .schedule import ddim_timesteps, sdedit

log = logging.getLogger(__name__)

EXTRA_COLUMNS = ("source_image", "harmonize_region", "start_timestep", "ddim_steps", "checkpoint_sha256",
                 "contrast_before", "contrast_after", "contrast_ratio", "consistent")
OUTPUT_DIRS = ("images", "labels", "sidecars")
OUTPUT_FILES = ("index.csv", "consistency.csv", "harmonize.yaml", "preview.png")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


# ----------------------------------------------------------------------------- the network
@dataclass
class Denoiser:
    """A loaded noise-prediction network with what it was trained with."""

    model: Any  # torch.nn.Module, eval mode, on ``device``
    config: DiffusionConfig
    path: Path
    sha256: str
    weights: str  # "ema" or "final"
    device: Any  # torch.device
    precision: str = "32"
    _alphas: Any = field(default=None, repr=False)

    @property
    def alphas_cumprod(self):
        if self._alphas is None:
            self._alphas = self.config.noise.alphas_cumprod()
        return self._alphas

    def predict(self, x, t: int):
        """Noise estimate for a batch of windows ``x`` (B, 1, *patch) at timestep ``t``."""
        import torch

        n = x.shape[0]
        if n == 1 and x.device.type == "cpu":
            # Batch-1 3D convolutions with few channels hit a slow CPU path: a batch of two
            # copies is ~3x faster than one window alone (GroupNorm: samples stay independent).
            return self.predict(torch.cat([x, x]), t)[:1]
        timesteps = torch.full((n,), int(t), dtype=torch.long, device=x.device)
        with torch.no_grad():
            if self.precision != "32" and x.device.type == "cuda":
                dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    return self.model(x, timesteps=timesteps).float()
            return self.model(x, timesteps=timesteps)






def _from_lightning(ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The DDPM's weights (the EMA copy when it was updated) and settings out of a training checkpoint."""
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if config is None:
        raise InputError("Lightning checkpoint without the metsynth settings (hyper_parameters.config)")
    state = ckpt["state_dict"]
    ema = {k[len("ema.module."):]: v for k, v in state.items() if k.startswith("ema.module.")}
    n_avg = state.get("ema.n_averaged")
    if ema and (n_avg is None or int(n_avg) > 0):
        return ema, {"weights": "ema", "config": config}
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}, {"weights": "final",
                                                                                       "config": config}


def read_checkpoint(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], DiffusionConfig, str]:
    """(state_dict, settings, weights kind) of an exported ``model.pt`` or a Lightning ``.ckpt``
    (:func:`metsynth.checkpoints.load_model`, ``weights_only``)."""
    from ..checkpoints import load_model

    state, meta, path = load_model(checkpoint, "ddpm", from_lightning=_from_lightning)
    if not isinstance(meta.get("config"), dict):
        raise InputError(f"{path}: not a metsynth DDPM description (no settings 'config')")
    config = DiffusionConfig.from_dict(meta["config"], source=str(path), error=InputError)
    if not all(hasattr(v, "shape") for v in state.values()):
        raise InputError(f"{path}: expected a state_dict (name -> tensor)")
    return state, config, str(meta.get("weights", "final"))


def checkpoint_settings(checkpoint: str | os.PathLike) -> DiffusionConfig:
    """The settings stored with a checkpoint (reads only model.yaml for an exported model.pt)."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    yaml_path = path.with_suffix(".yaml")
    if path.suffix == ".pt" and path.is_file() and yaml_path.is_file():
        info = read_yaml(yaml_path, error=InputError)
        if "config" in info:
            return DiffusionConfig.from_dict(info["config"], source=str(yaml_path), error=InputError)
    return read_checkpoint(path)[1]


def load_denoiser(checkpoint: str | os.PathLike, device: str | None = "auto", precision: str = "32") -> Denoiser:
    """Load weights safely (``weights_only=True``) into a freshly built network, in eval mode."""
    if str(precision) not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    state, config, kind = read_checkpoint(path)
    model = config.model.build()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: weights do not fit the network described by its settings "
                         f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. "
                         f"{(list(missing) + list(unexpected))[:3]})")
    torch_device = resolve_device(device)
    model = model.to(torch_device).eval()
    return Denoiser(model, config, path, file_sha256(path), kind, torch_device, str(precision))


# ----------------------------------------------------------------------------- refinement
def predict_noise_tiled(denoiser: Denoiser, x, t: int, config: HarmonizeConfig):
    """The network's noise estimate over a (1, 1, Z, Y, X) tensor, window by window (Gaussian blend)."""
    from monai.inferers import sliding_window_inference

    patch = tuple(denoiser.config.train.patch_size)
    if tuple(x.shape[2:]) == patch:
        return denoiser.predict(x, t)
    return sliding_window_inference(
        x, roi_size=patch, sw_batch_size=config.sw_batch_size, predictor=lambda w: denoiser.predict(w, t),
        overlap=config.overlap, mode="gaussian", sigma_scale=config.sigma_scale, padding_mode="replicate",
        sw_device=x.device, device=x.device, progress=False,
    )


def count_windows(shape, patch, overlap: float) -> int:
    """Number of sliding windows MONAI uses over ``shape`` (for logs and benchmarks)."""
    n = 1
    for size, p in zip(shape, patch):
        if size <= p:
            continue
        stride = max(int(p * (1 - overlap)), 1)
        n *= math.ceil((size - p) / stride) + 1
    return n


def refine_array(array: np.ndarray, denoiser: Denoiser, config: HarmonizeConfig, generator) -> np.ndarray:
    """SDEdit on a 3D float array in [-1, 1]: noise to ``start_timestep``, DDIM back to 0.

    With ``config.draws > 1`` the result is the mean of that many runs whose start noise comes in
    antithetic pairs (``eps``, ``-eps``; an odd last draw is a fresh one). What the denoiser does
    not take out of the noise it was given is, to first order, linear in that noise, so a pair
    cancels it, while the correction the network makes to the image (its move towards the
    images it was trained on) is the same in both runs and stays. The runs go through the
    network as one batch (on a CPU a batch of two windows costs about what one does, see
    :meth:`Denoiser.predict`). ``draws = 1`` consumes the generator exactly as before (same bytes).
    """
    import torch

    timesteps = ddim_timesteps(denoiser.config.noise.num_train_timesteps, config.ddim_steps, config.start_timestep)
    x0 = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    noises = []
    for draw in range(config.draws):  # on the CPU: same bytes anywhere
        noises.append(torch.randn(x0.shape, generator=generator, dtype=torch.float32) if draw % 2 == 0
                      else -noises[-1])
    noise = torch.cat(noises)
    device = denoiser.device
    with torch.no_grad():
        out = sdedit(
            x0.expand(config.draws, *x0.shape[1:]).to(device), lambda x, t: predict_noise_tiled(denoiser, x, t, config),
            timesteps, denoiser.alphas_cumprod, noise.to(device), eta=config.eta, clip_sample=config.clip_sample,
            generator=generator,
        )
    return out[:, 0].float().mean(dim=0).cpu().numpy()


@dataclass(frozen=True)
class Box:
    """A box of voxels ``[lo, hi)`` per axis (z, y, x), and the lesion components it holds."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    lesions: tuple[int, ...] = ()

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    def overlaps(self, other: "Box") -> bool:
        return all(a < d and c < b for a, b, c, d in zip(self.lo, self.hi, other.lo, other.hi))

    def union(self, other: "Box") -> "Box":
        return Box(tuple(min(a, c) for a, c in zip(self.lo, other.lo)),  # type: ignore[arg-type]
                   tuple(max(b, d) for b, d in zip(self.hi, other.hi)),  # type: ignore[arg-type]
                   tuple(sorted(self.lesions + other.lesions)))

    def to_dict(self) -> dict[str, Any]:
        return {"lo": list(self.lo), "hi": list(self.hi), "lesions": list(self.lesions)}


def _fit_axis(lo: int, hi: int, minimum: int, size: int) -> tuple[int, int]:
    """Grow [lo, hi) to at least ``minimum`` voxels (centred), then shift/clip into [0, size)."""
    length = hi - lo
    if length < minimum:
        extra = minimum - length
        lo -= extra // 2
        hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > size:
        lo, hi = max(lo - (hi - size), 0), size
    return lo, hi


def lesion_boxes(label: np.ndarray, spacing, margin_mm: float, feather_mm: float, patch_size) -> list[Box]:
    """Boxes to refine: each lesion's bounding box plus margin and feather, at least one patch, merged."""
    components, count = ndimage.label(np.asarray(label) > 0)
    shape = components.shape
    pad = [int(math.ceil((margin_mm + feather_mm) / s)) for s in spacing]
    boxes = []
    for k, found in enumerate(ndimage.find_objects(components), start=1):
        lo, hi = [], []
        for axis, sl in enumerate(found):
            a, b = _fit_axis(sl.start - pad[axis], sl.stop + pad[axis], int(patch_size[axis]), shape[axis])
            lo.append(a)
            hi.append(b)
        boxes.append(Box(tuple(lo), tuple(hi), (k,)))
    merged = True
    while merged:  # merge until no two boxes overlap
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    boxes[i] = boxes[i].union(boxes.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: b.lo)


def feather_weight(box: Box, shape, spacing, feather_mm: float) -> np.ndarray:
    """Blend weight over a box: 1 inside, falling linearly to ~0 over ``feather_mm`` at each box face.

    Faces on the volume border get no ramp (there is nothing outside to blend with).
    """
    profiles = []
    for axis in range(3):
        n = box.hi[axis] - box.lo[axis]
        width = feather_mm / spacing[axis]
        w = np.ones(n, dtype=np.float32)
        if width > 0:
            i = np.arange(n, dtype=np.float32)
            if box.lo[axis] > 0:
                w = np.minimum(w, (i + 0.5) / (width + 0.5))
            if box.hi[axis] < shape[axis]:
                w = np.minimum(w, (n - 1 - i + 0.5) / (width + 0.5))
        profiles.append(np.clip(w, 0.0, 1.0))
    return profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]


def volume_seed(run_seed: int, volume_id: str) -> int:
    """The seed of one volume's noise: ``SeedSequence([run_seed, stable_hash(volume_id)])``."""
    from ..synthesis.run import stable_hash

    seq = np.random.SeedSequence([int(run_seed), stable_hash(volume_id)])
    return int(seq.generate_state(1, dtype=np.uint64)[0])


def harmonize_volume(image: Volume, label: Volume | None, denoiser: Denoiser, config: HarmonizeConfig,
                     seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Refine one volume; returns the new array (float32, same grid) and what was done."""
    import torch

    check_finite(image)
    arr = np.asarray(image.array, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.001 or hi > 1.001:
        raise InputError(f"{image.name}: intensities span [{lo:g}, {hi:g}], not [-1, 1]; harmonize volumes made "
                         "from a prepared cohort (standardized by `metsynth prepare`)")
    patch = tuple(denoiser.config.train.patch_size)
    timesteps = ddim_timesteps(denoiser.config.noise.num_train_timesteps, config.ddim_steps, config.start_timestep)
    generator = torch.Generator().manual_seed(int(seed))
    info: dict[str, Any] = {"timesteps": timesteps, "draws": config.draws,
                            "network_evaluations_per_window": len(timesteps) * config.draws}
    if config.region == "volume":
        out = refine_array(arr, denoiser, config, generator)
        info["boxes"] = [Box((0, 0, 0), tuple(arr.shape)).to_dict()]  # type: ignore[arg-type]
        info["windows"] = count_windows(arr.shape, patch, config.overlap)
        return np.clip(out, -1, 1).astype(np.float32), info
    if label is None:
        raise InputError(f"{image.name}: region 'lesion' needs the volume's label file")
    if label.shape != image.shape:
        raise InputError(f"{label.name}: label shape {label.shape} differs from its image {image.shape}")
    boxes = lesion_boxes(label.array, image.spacing, config.lesion_margin_mm, config.feather_mm, patch)
    if not boxes:
        log.warning("%s: the label has no lesion voxel; the volume is copied unchanged", image.name)
    out = arr.copy()
    windows = 0
    for box in boxes:
        region = arr[box.slices]
        refined = np.clip(refine_array(region, denoiser, config, generator), -1, 1)
        weight = feather_weight(box, arr.shape, image.spacing, config.feather_mm)
        out[box.slices] = (weight * refined + (1.0 - weight) * region).astype(np.float32)
        windows += count_windows(box.shape, patch, config.overlap)
    info["boxes"] = [b.to_dict() for b in boxes]
    info["windows"] = windows
    return out, info


# ----------------------------------------------------------------------------- the set
@dataclass(frozen=True)
class SyntheticItem:
    """One volume of a synthetic set: its files and its index row (strings)."""

    volume_id: str
    image: str | None
    label: str | None
    sidecar: str | None
    row: dict[str, str]
    kept: bool


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "y", "t")


def read_synthetic_set(folder: str | os.PathLike) -> tuple[list[SyntheticItem], list[str]]:
    """The volumes of a synthetic set and the index's columns (``index.csv``, else ``images/``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: synthetic set folder not found (the --out folder of `metsynth synthesize`)")
    index = folder / "index.csv"
    items: list[SyntheticItem] = []
    if index.is_file():
        with open(index, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            if "volume_id" not in columns:
                raise InputError(f"{index}: no 'volume_id' column (columns: {', '.join(columns)})")
            for row in reader:
                vid = row["volume_id"]
                kept = _truthy(row.get("kept", "true")) and bool(row.get("image"))
                image = _resolve(folder, row.get("image")) or _guess(folder, "images", vid)
                label = _resolve(folder, row.get("label")) or _guess(folder, "labels", vid)
                sidecar = folder / "sidecars" / f"{vid}.json"
                items.append(SyntheticItem(vid, image if kept else None, label if kept else None,
                                           str(sidecar) if sidecar.is_file() else None, dict(row), kept))
    else:
        columns = ["volume_id", "kept", "image", "label"]
        files = sorted(p for p in (folder / "images").glob("*.nii*")) if (folder / "images").is_dir() else []
        if not files:
            raise InputError(f"{folder}: neither index.csv nor images/*.nii.gz found; point to a synthetic set "
                             "(images/<id>.nii.gz, labels/<id>.nii.gz)")
        for path in files:
            vid = path.name.split(".nii")[0]
            sidecar = folder / "sidecars" / f"{vid}.json"
            items.append(SyntheticItem(vid, str(path), _guess(folder, "labels", vid),
                                       str(sidecar) if sidecar.is_file() else None,
                                       {"volume_id": vid, "kept": "true", "image": f"images/{path.name}",
                                        "label": ""}, True))
    ids = [i.volume_id for i in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"{folder}: duplicate volume ids in the index")
    return items, columns


def source_hu_window(folder: str | os.PathLike) -> tuple[float, float] | None:
    """The HU window a synthetic set's cohort was prepared with (``intensity`` in its config.yaml,
    written by ``metsynth synthesize``), or None if the set does not record it."""
    config_file = Path(folder) / "config.yaml"
    record = (read_yaml(config_file, error=InputError) or {}).get("intensity") if config_file.is_file() else None
    window = record.get("hu_window") if isinstance(record, dict) and record.get("units") == "standardized" else None
    return None if window is None else (float(window[0]), float(window[1]))


def output_scale(storage: str, synthetic_dir: str | os.PathLike) -> IntensityScale | None:
    """The int16 scale of the harmonized images: one HU of the set's HU window; a set that does not
    record its window (not written by `metsynth synthesize`) gets the fine standardized step."""
    if storage == "float32":
        return None
    window = source_hu_window(synthetic_dir)
    if window is None:
        log.warning("%s: config.yaml records no HU window of a prepared cohort (a set not written by `metsynth "
                    "synthesize`), so one HU is unknown; int16 images are stored at a step of 2^-14 of [-1, 1] "
                    "instead (under 0.1 HU for usual windows; larger files)", Path(synthetic_dir) / "config.yaml")
        return IntensityScale.standardized()
    return storage_scale(storage, window)


def _resolve(folder: Path, value: str | None) -> str | None:
    if not value:
        return None
    path = Path(value)
    return str(path if path.is_absolute() else folder / path)


def _guess(folder: Path, sub: str, vid: str) -> str | None:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        path = folder / sub / f"{vid}{suffix}"
        if path.is_file():
            return str(path)
    return None


@dataclass(frozen=True)
class HarmonizeTask:
    """One volume to harmonize (small and picklable: paths and settings)."""

    item: SyntheticItem
    out_dir: str
    checkpoint: str
    config: dict[str, Any]
    device: str
    precision: str
    threads: int | None = None
    image_scale: IntensityScale | None = None  # int16 storage (HarmonizeConfig.image_storage), else None

    @property
    def key(self) -> str:
        return self.item.volume_id


_DENOISERS: dict[tuple[Any, ...], Denoiser] = {}
_CACHE_LOCK = threading.Lock()  # Dask runs several tasks in threads of one process


def cached_denoiser(checkpoint: str, device: str, precision: str) -> Denoiser:
    """Load the network once per worker process (the last one used is kept)."""
    path = Path(checkpoint)
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    key = (str(checkpoint), stamp, device, precision)
    with _CACHE_LOCK:
        if key not in _DENOISERS:
            _DENOISERS.clear()
            _DENOISERS[key] = load_denoiser(checkpoint, device, precision)
        return _DENOISERS[key]


def run_task(task: HarmonizeTask) -> dict[str, Any]:
    """Harmonize one volume and write image, label copy and sidecar (last). Returns a small record."""
    import torch

    previous_threads = torch.get_num_threads()
    if task.threads:
        torch.set_num_threads(task.threads)
    try:
        return _run_task(task)
    finally:
        torch.set_num_threads(previous_threads)


def _run_task(task: HarmonizeTask) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    config = HarmonizeConfig.from_dict(task.config)
    denoiser = cached_denoiser(task.checkpoint, task.device, task.precision)
    item = task.item
    if item.image is None or not Path(item.image).is_file():
        raise InputError(f"volume {item.volume_id}: image file {item.image} not found")
    image = Volume.read(item.image)
    label = None
    if item.label is not None:
        label = Volume.read(item.label)
        if label.grid_mismatch(image):
            raise InputError(f"{item.label}: label is not on the grid of {item.image} ({label.grid_mismatch(image)})")
    elif config.region == "lesion":
        raise InputError(f"volume {item.volume_id}: no label file (labels/{item.volume_id}.nii.gz); region "
                         "'lesion' needs it (or use region 'volume')")
    seed = volume_seed(config.seed, item.volume_id)
    array, info = harmonize_volume(image, label, denoiser, config, seed)
    report = None
    if label is not None:
        report = check_consistency(image.array, array, label.array, image.spacing, config.ring_mm,
                                   config.min_contrast_ratio, config.min_contrast, config.min_lesion_voxels)
    out = Path(task.out_dir)
    image_rel = f"images/{item.volume_id}.nii.gz"
    image.with_array(array).write(out / image_rel, scale=task.image_scale)
    label_rel = None
    if item.label is not None:
        label_rel = f"labels/{Path(item.label).name}"
        with atomic_path(out / label_rel) as tmp:
            shutil.copyfile(item.label, tmp)
    seconds = time.perf_counter() - start
    sidecar = read_json(item.sidecar) if item.sidecar else {"volume_id": item.volume_id}
    collapsed = bool(report.collapsed) if report is not None else False
    dropped = collapsed and config.drop_inconsistent
    sidecar.update({
        "volume_id": item.volume_id,
        "image": image_rel,
        "label": label_rel,
        "harmonization": {
            "source_image": str(Path(item.image).resolve()),
            "source_label": str(Path(item.label).resolve()) if item.label else None,
            "source_sidecar": str(Path(item.sidecar).resolve()) if item.sidecar else None,
            "source_stamp": files_stamp([item.image, item.label]),
            "checkpoint": str(Path(task.checkpoint).resolve()),
            "checkpoint_sha256": denoiser.sha256,
            "weights": denoiser.weights,
            "start_timestep": config.start_timestep,
            "ddim_steps": config.ddim_steps,
            "eta": config.eta,
            "region": config.region,
            "seed": config.seed,
            "volume_seed": seed,
            "device": str(denoiser.device),
            "precision": denoiser.precision,
            "threads": torch.get_num_threads(),
            "seconds": round(seconds, 3),
            "settings": config.model_dump(mode="json"),
            **info,
        },
        "consistency": report.to_dict() if report is not None else None,
    })
    if dropped:
        sidecar["kept"] = False
        sidecar["reason"] = "harmonization: lesion contrast collapsed"
    write_json(out / "sidecars" / f"{item.volume_id}.json", sidecar)  # last: marks the volume finished
    return {"volume_id": item.volume_id, "seconds": seconds, "collapsed": collapsed}


# ----------------------------------------------------------------------------- the run
def _harmonized(out: Path, item: SyntheticItem) -> bool:
    """Whether ``item`` is harmonized in ``out`` from its synthetic files as they are now (a volume
    that the synthesis wrote again since, e.g. after a change of its settings, is redone)."""
    sidecar = finished_sidecar(out, item.volume_id)
    if sidecar is None:
        return False
    recorded = (sidecar.get("harmonization") or {}).get("source_stamp")
    return recorded is None or recorded == files_stamp([item.image, item.label])


@dataclass
class HarmonizeSummary:
    out_dir: Path
    volumes: int
    done_before: int
    done_now: int
    flagged: list[str]
    seconds: float
    index: Path
    consistency: Path
    failures: list[Any] = field(default_factory=list)
    preview: Path | None = None
    checkpoint_sha256: str = ""

    def describe(self) -> str:
        text = (f"{self.volumes} volumes: {self.done_now} harmonized now, {self.done_before} already done; "
                f"{len(self.flagged)} flagged by the consistency check; {self.seconds:.1f} s")
        if self.failures:
            text += f"; {len(self.failures)} FAILED (rerun to retry)"
        return text


def _claim_out_dir(out: Path, source: Path, resolved: dict[str, Any], force: bool) -> None:
    if out.resolve() == source.resolve():
        raise ConfigError(f"{out}: the output folder must differ from the synthetic set it reads")
    settings = out / "harmonize.yaml"
    if settings.is_file():
        try:
            old = read_yaml(settings, error=InputError)
        except InputError:
            old = {}
        if isinstance(old.get("harmonize"), dict):  # from before image_storage existed: float32
            old["harmonize"].setdefault("image_storage", "float32")
        keys = ("source", "checkpoint_sha256", "harmonize")
        diffs = [f"{k}: {old.get(k)!r} -> {resolved[k]!r}" for k in keys if old.get(k) != resolved[k]]
        if diffs:
            if not force:
                shown = "; ".join(d[:160] for d in diffs)
                raise ConfigError(f"{out}: holds a harmonization with other settings ({shown}); use another --out "
                                  "folder, or --force to delete those outputs and start again")
            log.warning("--force: removing the previous harmonization in %s", out)
            for name in OUTPUT_DIRS:
                shutil.rmtree(out / name, ignore_errors=True)
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out}: folder exists and is not a metsynth harmonization; choose an empty or new "
                          "--out folder (or --force)")
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_DIRS:
        (out / name).mkdir(exist_ok=True)
    remove_stale_temps(out)
    write_text(settings, yaml.safe_dump(resolved, sort_keys=False))


def harmonize_config_for(checkpoint: str | os.PathLike, overrides: dict[str, Any] | None = None) -> HarmonizeConfig:
    """The checkpoint's own harmonization settings (its preset's), with overrides merged in."""
    data = checkpoint_settings(checkpoint).harmonize.model_dump()
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return HarmonizeConfig.from_dict(data, source="harmonize settings")


def harmonize_set(
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    config: HarmonizeConfig | None = None,
    *,
    workers: int = 1,
    scheduler: Any = None,
    device: str = "auto",
    precision: str = "32",
    progress: bool = True,
    force: bool = False,
    preview: int = 0,
    limit: int | None = None,
    threads: int | None = None,
    volume_ids: list[str] | None = None,
) -> HarmonizeSummary:
    """Harmonize every kept volume of a synthetic set into ``out_dir`` (resumable, parallel).

    ``config``: the harmonization settings (default: those stored with the checkpoint, i.e. its
    preset's). ``workers``/``scheduler``: see :func:`metsynth.parallel.map_tasks`; each worker
    loads the network once. ``device``: auto (cuda if available), cpu, gpu/cuda.
    ``preview``: write ``preview.png`` with that many lesions (synthetic / harmonized / difference).
    ``limit``: harmonize only the first ``limit`` kept volumes of the set (trials, previews).
    ``volume_ids``: harmonize only these kept volumes (the start-timestep sweep harmonizes the
    volumes the realism measure samples); an id the set does not have is an error.
    ``threads``: torch CPU threads per task (default 1, whatever the workers, so that the bytes
    do not depend on them; use ``workers`` for speed). Results are byte-identical on CPU for the
    same settings and the same threads per task, whatever the number of workers or the scheduler.
    """
    from ..parallel import TasksFailed, map_tasks

    start = time.perf_counter()
    synthetic_dir, out = Path(synthetic_dir), Path(out_dir)
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "model.pt"
    torch_device = resolve_device(device)
    inline = workers == 1 and scheduler is None
    # Load (and so validate) the checkpoint before anything is written; inline runs reuse this copy.
    denoiser = (cached_denoiser(str(checkpoint.resolve()), str(torch_device), str(precision)) if inline
                else load_denoiser(checkpoint, "cpu", str(precision)))
    config = config or denoiser.config.harmonize
    try:
        check_harmonize(config, denoiser.config.noise, denoiser.config.train)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    items, columns = read_synthetic_set(synthetic_dir)
    scale = output_scale(config.image_storage, synthetic_dir)
    resolved = {"source": str(synthetic_dir.resolve()), "checkpoint": str(checkpoint.resolve()),
                "checkpoint_sha256": denoiser.sha256, "harmonize": config.model_dump(mode="json")}

    kept = [i for i in items if i.kept]
    if volume_ids is not None:
        known = {i.volume_id for i in kept}
        missing = sorted(set(volume_ids) - known)
        if missing:
            raise ConfigError(f"{synthetic_dir}: no kept volume {missing[:3]}{' ...' if len(missing) > 3 else ''} "
                              f"to harmonize ({len(missing)} of {len(volume_ids)} requested ids)")
        wanted = set(volume_ids)
        kept = [i for i in kept if i.volume_id in wanted]
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        kept = kept[:limit]
    _claim_out_dir(out, synthetic_dir, resolved, force)
    todo = [i for i in kept if not _harmonized(out, i)]
    done_before = len(kept) - len(todo)
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if threads is None:
        threads = 1
    tasks = [HarmonizeTask(i, str(out.resolve()), str(checkpoint.resolve()), config.model_dump(mode="json"),
                           str(torch_device), str(precision), threads, scale) for i in todo]
    timesteps = ddim_timesteps(denoiser.config.noise.num_train_timesteps, config.ddim_steps, config.start_timestep)
    log.info("harmonize: %d kept volumes, %d already done; region %s, start t=%d, DDIM timesteps %s on %s",
             len(kept), done_before, config.region, config.start_timestep, timesteps, torch_device)
    del denoiser
    results = map_tasks(run_task, tasks, workers=workers, scheduler=scheduler, progress=progress,
                        desc="harmonize", raise_on_failure=False)
    done_now = sum(1 for _ in results)
    index, flagged = build_index(out, items, columns)
    consistency = build_consistency_table(out, items)
    summary = HarmonizeSummary(out, len(kept), done_before, done_now, flagged, time.perf_counter() - start,
                               index, consistency, list(results.failures),
                               checkpoint_sha256=resolved["checkpoint_sha256"])
    if preview:
        from .preview import write_before_after

        summary.preview = write_before_after(synthetic_dir, out, preview, out / "preview.png")
    log.info("harmonize: %s", summary.describe())
    if results.failures:
        raise TasksFailed(results.failures, len(tasks), "harmonization tasks")
    return summary


def build_index(out: Path, items: list[SyntheticItem], columns: list[str]) -> tuple[Path, list[str]]:
    """``index.csv`` in the synthetic set's order: its columns (image/label pointing here) + ours."""
    header = list(columns) + [c for c in EXTRA_COLUMNS if c not in columns]
    for name in ("image", "label", "kept"):
        if name not in header:
            header.append(name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    flagged = []
    for item in items:
        row = {k: item.row.get(k, "") for k in header}
        if item.kept:
            sidecar_path = out / "sidecars" / f"{item.volume_id}.json"
            if not sidecar_path.is_file():
                continue  # failed or not run yet
            data = read_json(sidecar_path)
            h, c = data["harmonization"], data.get("consistency") or {}
            row.update({
                "image": data["image"], "label": data.get("label") or "",
                "kept": "true" if data.get("kept", True) else "false",
                "source_image": h["source_image"], "harmonize_region": h["region"],
                "start_timestep": h["start_timestep"], "ddim_steps": h["ddim_steps"],
                "checkpoint_sha256": h["checkpoint_sha256"],
                "contrast_before": _fmt(c.get("contrast_before")), "contrast_after": _fmt(c.get("contrast_after")),
                "contrast_ratio": _fmt(c.get("ratio")),
                "consistent": "" if not c else ("false" if c.get("collapsed") else "true"),
            })
            if "reason" in header and not data.get("kept", True):
                row["reason"] = data.get("reason", "")
            if c.get("collapsed"):
                flagged.append(item.volume_id)
        writer.writerow(row)
    return write_text(out / "index.csv", buffer.getvalue()), flagged


def build_consistency_table(out: Path, items: list[SyntheticItem]) -> Path:
    """``consistency.csv``: one row per lesion (volume, lesion, means before/after, ratio, flags)."""
    buffer = io.StringIO()
    fields = ["volume_id", "lesion", "voxels", "inside_before", "ring_before", "inside_after", "ring_after",
              "contrast_before", "contrast_after", "ratio", "judged", "collapsed"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for item in items:
        path = out / "sidecars" / f"{item.volume_id}.json"
        if not item.kept or not path.is_file():
            continue
        report = read_json(path).get("consistency") or {}
        for les in report.get("lesions", []):
            writer.writerow([item.volume_id, les["index"], les["voxels"], _fmt(les["inside_before"]),
                             _fmt(les["ring_before"]), _fmt(les["inside_after"]), _fmt(les["ring_after"]),
                             _fmt(les["contrast_before"]), _fmt(les["contrast_after"]), _fmt(les["ratio"]),
                             str(les["judged"]).lower(), str(les["collapsed"]).lower()])
    return write_text(out / "consistency.csv", buffer.getvalue())


def _fmt(value: Any) -> str:
    return "" if value is None else f"{float(value):.5f}"


__all__ = [
    "Box", "Denoiser", "HarmonizeSummary", "HarmonizeTask", "SyntheticItem", "build_index", "cached_denoiser",
    "checkpoint_settings",
    "count_windows", "feather_weight", "file_sha256", "harmonize_config_for", "harmonize_set",
    "harmonize_volume", "lesion_boxes", "load_denoiser", "predict_noise_tiled", "read_checkpoint",
    "read_synthetic_set", "refine_array", "resolve_device", "run_task", "volume_seed",
]
