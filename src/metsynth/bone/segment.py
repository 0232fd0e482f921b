"""The entry points: :func:`segment_bone` (all bone), :func:`segment_femur` and :func:`find_femurs`
(the femurs, by side, in a :class:`FemurSearch`). They chain the steps of the method described in
the package docstring (:mod:`metsynth.bone`): working grid, bone mask, markers, femoral head,
watershed; then each femur found is measured and checked (:mod:`metsynth.bone.presence`), and
one that is not a proximal femur is dropped (:func:`_require_femur`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..config import look_up_option
from ..errors import InputError
from ..volume import Volume
from .config import SIDES, FemurSegConfig, Side
from .grid import _WorkGrid
from .head import _add_head_markers
from .markers import _find_markers
from .presence import FemurCandidate, check_femur, measure_femur
from .separation import _finish_femur, _watershed
from .threshold import _bone_mask, _require_bone

log = logging.getLogger(__name__)

_NO_FEMUR_HINT = ("check that the image is in HU and that the field of view covers the proximal femur (from the hip "
                  "joint to below the lesser trochanter, its lower edge cutting the femur shaft(s)), or give the femur "
                  "mask in the manifest (femur_mask)")


def segment_bone(image: Volume, config: FemurSegConfig | None = None) -> Volume:
    """All bone of a CT in HU, marrow and lesions inside the bone included (uint8 on the image's grid)."""
    config = config or FemurSegConfig()
    work = _WorkGrid.build(image, config)
    bone = _bone_mask(work, config)
    _require_bone(image, bone, config)
    return image.with_array(work.to_native(bone, image, config).astype(np.uint8))


def segment_femur(image: Volume, side: Side | None = None, config: FemurSegConfig | None = None) -> Volume:
    """Mask of the femur(s) of a CT in HU (uint8 on the image's grid), separated from the pelvis.

    ``side``: ``"left"`` / ``"right"`` (the patient's), ``"both"``, or ``None`` (every femur
    found: both if the field of view shows two). Raises :class:`InputError` if no femur is found
    or the asked side is missing.
    """
    if side is not None:
        side = look_up_option(str(side), ["left", "right", "both"], "femur side")
    config = config or FemurSegConfig()
    found = find_femurs(image, config, warn=False)
    if side in SIDES:
        if side in found.masks:
            wanted = [side]
        elif not found.bilateral and len(found.masks) == 1:
            (only,) = found.masks
            log.warning("%s: the field of view shows one leg; returning its femur (guessed %s side) for "
                        "side=%s", image.name, only, side)
            wanted = [only]
        else:
            why = f"; the {side} candidate was dropped: {found.rejected[side]}" if side in found.rejected else ""
            raise InputError(
                f"{image.name}: no {side} femur found (found: {', '.join(found.masks) or 'none'}{why}); check the "
                "case's side in the manifest, or that the field of view includes that hip")
    else:
        if side == "both" and len(found.masks) < 2:
            raise InputError(
                f"{image.name}: side 'both' asked but only the {', '.join(found.masks)} femur was found; "
                "check that the field of view includes both hips, or give one side")
        wanted = list(found.masks)
    # what is said is about the femur returned: a doubt about the other leg is not this case's
    _warn_femurs(image, found, wanted, rejected=side not in SIDES)
    out = np.zeros(image.shape, np.uint8)
    for s in wanted:
        out |= found.masks[s]
    return image.with_array(out)


@dataclass
class FemurSearch:
    """What :func:`find_femurs` found: one mask per side, and how the sides were read."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)  # side -> uint8 array on the image's grid
    bilateral: bool = False  # both hips in view (the midline read from the body)
    midline_x_mm: float | None = None  # world x of the body midline when bilateral
    heads: dict[str, tuple[tuple[float, float, float], float]] = field(default_factory=dict)
    # side -> (centre (z, y, x) in world mm, radius mm) of the fitted femoral head, when one was needed
    candidates: dict[str, "FemurCandidate"] = field(default_factory=dict)  # side -> measurements (kept or not)
    rejected: dict[str, str] = field(default_factory=dict)  # side -> why that candidate is not a femur
    doubts: dict[str, str] = field(default_factory=dict)  # side -> why a kept femur is doubtful


def find_femurs(image: Volume, config: FemurSegConfig | None = None, *, warn: bool = True) -> FemurSearch:
    """Every femur in the image, by side (see the package docstring, :mod:`metsynth.bone`, for the method).
    ``warn``: log the candidates dropped and the doubtful femurs kept (``result.rejected``,
    ``result.doubts``); :func:`segment_femur` says only those of the sides it returns."""
    config = config or FemurSegConfig()
    work = _WorkGrid.build(image, config)
    bone = _bone_mask(work, config)
    _require_bone(image, bone, config)
    seeds = _find_markers(work, bone, config)
    if not seeds.femurs:
        raise InputError(f"{image.name}: no femur found ({seeds.problem}); {_NO_FEMUR_HINT}")
    result = FemurSearch(bilateral=seeds.bilateral, midline_x_mm=seeds.midline_x)
    for k, side in enumerate(seeds.femurs, start=1):
        head = _add_head_markers(work, bone, seeds.array, k, config, image.name, side, seeds.midline_x)
        if head is not None:
            result.heads[side] = (tuple(float(c) for c in head.centre), head.radius)
    labels = _watershed(work, bone, seeds, config)
    for k, side in enumerate(seeds.femurs, start=1):
        femur = _finish_femur(labels, k, work, config)
        if not femur.any():
            continue
        others = (labels > 0) & (labels != k)
        result.masks[side] = work.to_native(femur, image, config, exclude=others,
                                            closing_mm=config.lesion_closing_mm).astype(np.uint8)
    if config.check_femur:
        _require_femur(image, result, config)
    if warn:
        _warn_femurs(image, result, list(result.masks), rejected=True)
    return result


def _require_femur(image: Volume, result: FemurSearch, config: FemurSegConfig) -> None:
    """Like :func:`_require_bone`, one level up: measure and check every femur of ``result`` (in
    place), drop those that are not proximal femurs, warn about doubtful ones; raise when none is left."""
    for side, mask in list(result.masks.items()):
        candidate = measure_femur(image, mask, config, result.midline_x_mm if result.bilateral else None)
        result.candidates[side] = candidate
        hard, doubtful = check_femur(candidate, config)
        if hard:
            result.rejected[side] = f"{candidate.describe()}: {'; '.join(hard)}"
            del result.masks[side]
            result.heads.pop(side, None)
        elif doubtful:
            result.doubts[side] = f"{candidate.describe()}: {'; '.join(doubtful)}"
    if not result.masks and result.rejected:
        what = "; ".join(f"the {side} candidate ({why})" for side, why in result.rejected.items())
        raise InputError(f"{image.name}: no femur found (the bone taken for one is not a proximal femur): {what}; "
                         f"{_NO_FEMUR_HINT}")


def _warn_femurs(image: Volume, result: FemurSearch, sides: list[str], rejected: bool) -> None:
    """Log the doubtful femurs among ``sides`` and, with ``rejected``, the candidates dropped."""
    for side, why in result.rejected.items() if rejected else ():
        log.warning("%s: the %s candidate is not a proximal femur and is ignored (%s)", image.name, side, why)
    for side, why in result.doubts.items():
        if side in sides:
            log.warning("%s: doubtful %s femur (%s); check its mask", image.name, side, why)

