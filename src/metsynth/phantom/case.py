"""One phantom case: draw the parameters, build the fields, render, add lesions and annotators."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config import look_up_option
from ..errors import ConfigError
from ..volume import Volume
from .anatomy import AnatomyParams, anatomy_fields, draw_anatomy
from .annotators import annotate, draw_annotations, references, resolution_scale
from .config import PhantomConfig
from .fields import Grid, coarse_grid
from .lesions import LesionShape, draw_lesions, realize_lesion, render_lesion
from .render import TISSUES, apply_scanner, draw_scanner, render_anatomy

log = logging.getLogger(__name__)

ROLES = ("healthy", "metastatic", "test")
SIDES = ("left", "right")
OUTSIDE_MM = 1.0e3  # SDF value used far from the bones


@dataclass
class PhantomCase:
    """A generated CT with its exact masks, annotators' masks and everything drawn to make it."""

    case_id: str
    role: str
    centre: str
    side: str
    image: Volume  # int16 HU
    femur: Volume  # uint8, includes the lesions inside the bone, excludes the pelvis
    lesion: Volume | None  # uint8 exact lesion mask (None for healthy cases)
    annotations: dict[tuple[str, int], Volume]  # (annotator, round) -> uint8 mask
    lesions: list[dict]  # per lesion: index, region, centre_world, volume_mm3, breaks_cortex, ...
    labels: Volume  # uint8 tissue label map (render.TISSUES), for tests and QC
    params: dict[str, Any] = field(default_factory=dict)  # every drawn parameter (JSON-able)


def as_rng(seed_or_rng: Any) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def fov_grid(config: PhantomConfig, anat: AnatomyParams, spacing: tuple[float, float, float],
             jitter_mm: np.ndarray) -> Grid:
    """The image grid: ``fov_mm`` around the head centre plus ``fov_offset_mm`` (anatomical directions)."""
    sup, post, med = config.fov_offset_mm
    centre = np.asarray(anat.head_world) + np.array([sup, post, anat.sign * med]) + jitter_mm
    shape = tuple(max(int(round(f / s)), 8) for f, s in zip(config.fov_mm, spacing))
    origin = centre - (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    return Grid(shape, tuple(float(s) for s in spacing),  # type: ignore[arg-type]
                tuple(float(np.round(o, 3)) for o in origin))


def generate_case(case_id: str, role: str, seed_or_rng: Any, config: PhantomConfig | None = None,
                  centre: str | None = None, side: str | None = None) -> PhantomCase:
    """Generate one phantom CT.

    ``role``: ``healthy`` (no lesion), ``metastatic`` (``config.lesion_count`` lesions, exact
    mask) or ``test`` (metastatic, plus every configured annotator's masks). ``seed_or_rng``: an int, a
    ``SeedSequence`` or a ``Generator``; the same seed gives the same arrays. ``centre`` and
    ``side`` are drawn when not given (the draw happens either way, so fixing one does not
    change the rest of the case).
    """
    config = config or PhantomConfig()
    names = list(config.centres)
    try:
        role = look_up_option(role, list(ROLES), "case role")
        centre = None if centre is None else look_up_option(centre, names, "centre")
        side = None if side is None else look_up_option(side, list(SIDES), "side")
    except ConfigError as err:
        raise ConfigError(f"case {case_id}: {err}") from None
    rng = as_rng(seed_or_rng)
    seeds = rng.integers(0, 2**63 - 1, size=6)
    drawn_centre = names[int(rng.integers(len(names)))]
    drawn_side = SIDES[int(rng.integers(2))]
    jitter = rng.uniform(-4.0, 4.0, size=3)
    centre = drawn_centre if centre is None else centre
    side = drawn_side if side is None else side
    sub = [np.random.default_rng(int(s)) for s in seeds]

    anat = draw_anatomy(sub[0], side, config.pelvis)
    spacing = config.centre_spacing(centre)
    scanner = draw_scanner(sub[1], centre, config.centres[centre], spacing)
    grid = fov_grid(config, anat, spacing, jitter)
    coarse = coarse_grid(grid, config.field_resolution_mm)
    cf = anatomy_fields(anat, coarse)
    lesion_params = draw_lesions(sub[2], config, coarse, cf, grid, case_id) if role != "healthy" else []

    rendered = render_anatomy(anat, cf, coarse, grid, sub[3], outside_mm=OUTSIDE_MM)
    hu, labels, femur_sdf = rendered.hu, rendered.labels, rendered.femur

    shapes: list[LesionShape] = []
    occupied = np.zeros(grid.shape, dtype=bool)
    for lp in lesion_params:
        shape = realize_lesion(lp, grid, femur_sdf, occupied)
        occupied[shape.box] |= shape.mask
        shapes.append(shape)
    for shape in shapes:
        render_lesion(hu, labels, shape, femur_sdf, grid, TISSUES)

    image = apply_scanner(hu, cf.body, coarse, grid, scanner)
    del hu
    vol = Volume(image, grid.spacing, grid.origin)
    femur = vol.with_array((femur_sdf < 0).astype(np.uint8))
    lesion = vol.with_array(occupied.astype(np.uint8)) if role != "healthy" else None

    annotations: dict[tuple[str, int], Volume] = {}
    draws = []
    if role == "test" or (role == "metastatic" and config.annotate_metastatic):
        draws = draw_annotations(sub[4], config.annotators, [s.volume_mm3 for s in shapes])
        reach = resolution_scale(grid.spacing) * max(abs(a.bias_mm) + 3 * a.round_bias_sd_mm + 3 * a.jitter_mm
                                                     for a in config.annotators.values())
        refs = references(shapes, femur_sdf < 0, grid, reach)
        for d in draws:
            mask = annotate(d, config.annotators[d.annotator], refs, grid)
            annotations[(d.annotator, d.round)] = vol.with_array(mask)

    params = {
        "case_id": case_id, "role": role, "centre": centre, "side": side,
        "grid": {"shape": list(grid.shape), "spacing": list(grid.spacing), "origin": list(grid.origin)},
        "anatomy": _plain(asdict(anat)), "scanner": scanner.as_dict(),
        "lesions": [_plain(lp.as_dict()) for lp in lesion_params],
        "annotations": [d.as_dict() for d in draws],
    }
    return PhantomCase(case_id=case_id, role=role, centre=centre, side=side, image=vol, femur=femur,
                       lesion=lesion, annotations=annotations, lesions=[s.info for s in shapes],
                       labels=vol.with_array(labels), params=params)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
