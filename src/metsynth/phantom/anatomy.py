"""Anatomy of the phantom: a proximal femur, the adjacent pelvis, muscles, fat and skin, as fields.

Geometry is built in a *local* anatomical frame centred on the femoral head, in mm:
``u`` medial, ``v`` anterior, ``w`` superior (along the shaft). The drawn pose maps it to the
LPS world (x to the patient's left, y posterior, z superior); a left femur is the mirror image
of a right one in x. Shapes are signed distance functions (SDF, negative inside) of smoothly
unioned primitives, evaluated on a coarse grid and upsampled linearly (they are smooth).

The drawn parameters and the frame (:class:`AnatomyParams`, :func:`draw_anatomy`) are in
:mod:`metsynth.phantom.anatomy_params` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..seeds import PHANTOM_ANATOMY
from .anatomy_params import AnatomyParams, _rot, draw_anatomy
from .fields import F32, Grid, capsule, ellipsoid, normalize_distance, smax, smin, smooth_noise, smoothstep, sphere

__all__ = ["FAR_MM", "REGION_CODES", "AnatomyFields", "AnatomyParams", "anatomy_fields", "draw_anatomy"]

REGION_CODES = {"outside": 0, "head": 1, "neck": 2, "trochanter": 3, "shaft": 4}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


FAR_MM = 1.0e3  # distance value given to points far from a structure


@dataclass
class AnatomyFields:
    """Smooth fields on one grid (coarse, then upsampled), float32 unless noted."""

    femur: np.ndarray  # SDF in mm
    cortex: np.ndarray  # cortical thickness (mm)
    density: np.ndarray  # trabecular bone volume fraction (0..1)
    grain: np.ndarray  # 0: trabecular grain along the shaft; 1: along the neck
    pelvis: np.ndarray  # SDF
    joint: np.ndarray  # SDF of the joint space (cartilage) inside the acetabulum
    body: np.ndarray  # SDF of the skin surface
    fascia: np.ndarray  # SDF of the muscle compartment (under the subcutaneous fat)
    planes: np.ndarray  # SDF of intermuscular fat planes and fat around vessels/nerve
    vessels: np.ndarray  # SDF of the femoral vessels and the sciatic nerve
    muscle_offset: np.ndarray  # HU offset per muscle
    marrow: np.ndarray  # marrow HU (red in the epiphyses, yellow in the canal)
    region: np.ndarray | None = None  # uint8 REGION_CODES (coarse only)

    BONE = ("femur", "cortex", "density", "grain", "pelvis", "joint", "marrow")
    SOFT = ("body", "fascia", "planes", "vessels", "muscle_offset")


def _local_box(p: AnatomyParams, grid: Grid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index box of ``grid`` containing the local-frame box [lo, hi] (after the pose), or None."""
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    world = np.array([p.to_world_point(c) for c in corners])
    wlo, whi = world.min(axis=0), world.max(axis=0)
    org, sp = np.asarray(grid.origin), np.asarray(grid.spacing)
    ilo = np.clip(np.floor((wlo - org) / sp).astype(int) - 1, 0, np.asarray(grid.shape))
    ihi = np.clip(np.ceil((whi - org) / sp).astype(int) + 2, 0, np.asarray(grid.shape))
    if np.any(ihi <= ilo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(ilo, ihi))  # type: ignore[return-value]


def _points(p: AnatomyParams, grid: Grid, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
    z, y, x = grid.axes()
    u, v, w = p.local(z[box[0], None, None], y[None, box[1], None], x[None, None, box[2]])
    shape = (len(z[box[0]]), len(y[box[1]]), len(x[box[2]]))
    return tuple(np.ascontiguousarray(np.broadcast_to(a, shape), dtype=F32) for a in (u, v, w))


def anatomy_fields(p: AnatomyParams, grid: Grid) -> AnatomyFields:
    """Evaluate every anatomical field on ``grid`` (meant for a coarse grid).

    Bone primitives are evaluated only in boxes around the femur and the pelvis.
    """
    lm = p.landmarks()
    s, rh = lm["neck_base"], p.head_radius
    seq = np.random.SeedSequence([p.noise_seed, PHANTOM_ANATOMY]).spawn(3)
    shape = grid.shape
    out = {k: np.full(shape, FAR_MM, dtype=F32) for k in ("femur", "pelvis", "joint")}
    out.update({k: np.zeros(shape, dtype=F32) for k in ("cortex", "density", "grain")})
    out["marrow"] = np.full(shape, F32(p.hu["marrow_yellow"]), dtype=F32)
    region = np.zeros(shape, dtype=np.uint8)
    w_low = float(grid.origin[0] - p.head_world[0]) - 30.0
    fbox = _local_box(p, grid, np.array([s[0] - 50.0, s[1] - 45.0, w_low]), np.array([rh + 8.0, 45.0, rh + 8.0]))
    if fbox is not None:
        femur = _femur(p, _points(p, grid, fbox), grid.spacing, np.random.default_rng(seq[0]))
        for k in ("femur", "cortex", "density", "grain", "marrow"):
            out[k][fbox] = femur[k]
        region[fbox] = femur["region"]
    if p.pelvis:
        pbox = _local_box(p, grid, np.array([-30.0, -75.0, -95.0]), np.array([130.0, 70.0, 130.0]))
        if pbox is not None:
            pel, joint = _pelvis(p, _points(p, grid, pbox), out["femur"][pbox], grid.spacing)
            out["pelvis"][pbox] = pel
            out["joint"][pbox] = joint
    soft = _soft(p, _points(p, grid, (slice(None),) * 3), grid.spacing, np.random.default_rng(seq[2]))
    out.update(soft)
    p.derived.update({"neck_dir_world": p.to_world_vector(lm["neck_dir"]).tolist(),
                      "shaft_dir_world": p.to_world_vector(np.array([0, 0, 1.0])).tolist(),
                      "neck_base_world": p.to_world_point(s).tolist(),
                      "head_centre_world": list(p.head_world)})
    return AnatomyFields(**out, region=region)


def _femur(p: AnatomyParams, pts: tuple[np.ndarray, ...], spacing, rng: np.random.Generator) -> dict[str, np.ndarray]:
    u, v, w = pts
    lm = p.landmarks()
    n, s = lm["neck_dir"], lm["neck_base"]
    rh = p.head_radius
    head = sphere(pts, np.zeros(3), rh)

    # neck: an elliptical, tapered capsule from inside the trochanteric region to the head
    e_sup = _unit(np.array([0, 0, 1.0]) - n[2] * n)
    e_ant = np.cross(n, e_sup)
    a0, a1 = s - 6.0 * n, -0.25 * rh * n
    ab = a1 - a0
    d = [pts[i] - F32(a0[i]) for i in range(3)]
    t = np.clip((d[0] * F32(ab[0]) + d[1] * F32(ab[1]) + d[2] * F32(ab[2])) / F32(ab @ ab), 0.0, 1.0)
    q = [d[i] - t * F32(ab[i]) for i in range(3)]
    q_sup = q[0] * F32(e_sup[0]) + q[1] * F32(e_sup[1]) + q[2] * F32(e_sup[2])
    q_ant = q[0] * F32(e_ant[0]) + q[1] * F32(e_ant[1]) + q[2] * F32(e_ant[2])
    q_ax = q[0] * F32(n[0]) + q[1] * F32(n[1]) + q[2] * F32(n[2])  # non-zero beyond the two ends
    semi = F32(p.neck_semi) * (1.0 + 0.55 * np.clip((0.55 - t) / 0.55, 0, 1) ** 2
                               + 0.25 * np.clip((t - 0.7) / 0.3, 0, 1) ** 2)
    semi_ap = semi * F32(p.neck_ratio)
    neck = (np.sqrt((q_sup / semi) ** 2 + (q_ant / semi_ap) ** 2 + (q_ax / semi_ap) ** 2) - 1.0) * semi_ap
    inferior = -q_sup / np.maximum(np.sqrt(q_sup ** 2 + q_ant ** 2), 1e-3)  # 1 on the calcar side
    del d, q, q_ant, q_ax, semi, semi_ap

    # shaft: a bowed generalized cylinder flaring into the metaphysis
    drop = np.clip((s[2] - w) / 200.0, 0, None)
    cu, cv = F32(s[0]), F32(s[1]) + F32(p.bow) * drop * drop
    flare = smoothstep(s[2] - 75.0, s[2] + 5.0, w)
    ru = F32(p.shaft_radius) + F32(p.flare_ml) * flare
    rv = F32(p.shaft_radius * 0.95) + F32(p.flare_ap) * flare
    du, dv = u - cu, v - cv
    shaft = (np.sqrt((du / ru) ** 2 + (dv / rv) ** 2) - 1.0) * np.minimum(ru, rv)
    shaft = smax(shaft, w - F32(s[2] + 14.0), 6.0)
    ridge_on = smoothstep(s[2] - 45.0, s[2] - 80.0, w)  # linea aspera: a posterior ridge
    ridge = np.sqrt(du ** 2 + (dv + rv * 0.92) ** 2) - F32(3.2) * ridge_on + F32(1.5) * (1 - ridge_on)
    angle = np.arctan2(dv, du)  # 0 medial, pi/2 anterior
    del du, dv, drop, flare, ru, rv

    # greater and lesser trochanter, intertrochanteric crest
    gs, ls = p.gt_scale, p.lt_scale
    gt_c = np.array([s[0] - 15.0, s[1] - 6.0, s[2] + 14.0])
    gt = ellipsoid(pts, gt_c, np.array([12.5, 16.0, 22.0]) * gs, _rot(1, -12) @ _rot(0, 8))
    lt_c = np.array([s[0] + p.shaft_radius * 0.75, s[1] - p.shaft_radius * 0.55, s[2] - 34.0])
    lt = ellipsoid(pts, lt_c, np.array([8.0, 7.5, 12.0]) * ls, _rot(2, -35))
    crest, _ = capsule(pts, gt_c + np.array([2.0, -9.0, -12.0]), lt_c + np.array([-3.0, -1.0, 5.0]), 5.5, 4.0)

    femur = smin(shaft, neck, 11.0)
    femur = smin(femur, head, 6.0)
    femur = smin(femur, gt, 10.0)
    femur = smin(femur, crest, 5.0)
    femur = smin(femur, lt, 6.0)
    femur = smin(femur, ridge, 5.0)
    femur = normalize_distance(femur, spacing)

    # cortical thickness: blend of per-part values, weighted by closeness to each part
    troch = np.minimum(np.minimum(gt, lt), crest)
    upper_shaft = shaft + F32(40.0) * smoothstep(s[2] - 30.0, s[2] - 60.0, w)  # proximal shaft only
    comps = {"head": head, "neck": neck, "troch": np.minimum(troch, upper_shaft), "shaft": shaft,
             "ridge": ridge + 1.0}
    m = np.minimum.reduce(list(comps.values()))
    weights = {k: np.exp(-(c - m) / F32(3.0)) for k, c in comps.items()}
    total = sum(weights.values())
    cx = p.cortex_mm
    medial = 0.5 + 0.5 * np.cos(angle + np.radians(35))  # thickest posteromedially
    diaphysis = smoothstep(s[2] - 30.0, s[2] - 95.0, w)
    t_shaft = (F32(cx["proximal"]) + F32(cx["diaphysis"] - cx["proximal"]) * diaphysis) * (0.85 + 0.3 * medial)
    t_shaft = t_shaft + F32(cx["calcar"] * 0.4) * medial ** 2 * smoothstep(s[2] - 55.0, s[2] - 5.0, w)
    t_neck = F32(cx["neck"]) + F32(cx["calcar"] - cx["neck"]) * smoothstep(-0.1, 0.9, inferior)
    cortex = (weights["head"] * F32(cx["head"]) + weights["neck"] * t_neck + weights["troch"] * F32(cx["trochanter"])
              + weights["shaft"] * t_shaft + weights["ridge"] * F32(6.0)) / total
    del t_shaft, t_neck, medial, angle, inferior

    # trabecular density: dense head, principal compressive and tensile groups, Ward's triangle,
    # fading into the fatty medullary canal of the diaphysis
    comp_a = _unit(np.array([0.35, 0.05, 1.0])) * rh * 0.85
    comp_b = np.array([s[0] + p.shaft_radius * 0.8, s[1], s[2] - 10.0])
    compressive, _ = capsule(pts, comp_a, comp_b, 9.0, 6.0)
    tens_a = np.array([s[0] - 22.0, s[1] - 2.0, s[2] - 18.0])
    tens_m = 0.5 * s + 0.6 * p.neck_semi * e_sup
    tens_b = np.array([0.15 * rh, 0.0, -0.45 * rh])
    tensile = np.minimum(capsule(pts, tens_a, tens_m, 6.0, 5.0)[0], capsule(pts, tens_m, tens_b, 5.0, 6.0)[0])
    ward = sphere(pts, s + 16.0 * n + np.array([0, 0, -4.0]), 9.0)
    rho = (weights["head"] * F32(0.44) + weights["neck"] * F32(0.33) + weights["troch"] * F32(0.24)
           + weights["shaft"] * (F32(0.26) * smoothstep(s[2] - 90.0, s[2] - 38.0, w))
           + weights["ridge"] * F32(0.05)) / total
    rho = rho + F32(0.14) * smoothstep(4.0, -4.0, compressive) + F32(0.08) * smoothstep(4.0, -4.0, tensile)
    rho = rho * (1.0 - F32(0.65) * smoothstep(3.0, -5.0, ward))
    rho = np.clip(rho * F32(p.bmd), 0.0, 0.85).astype(F32)
    grain = np.clip(weights["neck"] / total + smoothstep(4.0, -4.0, tensile), 0, 1).astype(F32)
    marrow = F32(p.hu["marrow_yellow"]) + F32(p.hu["marrow_red"] - p.hu["marrow_yellow"]) * smoothstep(0.04, 0.2, rho)
    marrow = marrow + F32(6.0) * smooth_noise(rng, u.shape, 4.0 / float(np.mean(spacing)))

    # lesion sites: the neck proper (not its base), trochanteric region, diaphysis
    neck_site = neck + F32(FAR_MM) * (t < 0.35)
    codes = np.stack([head, neck_site, np.minimum(troch, upper_shaft), shaft + F32(FAR_MM) * (w > s[2] - 30.0)])
    region = (np.argmin(codes, axis=0) + 1).astype(np.uint8)
    region[femur >= 0] = 0
    return {"femur": femur, "cortex": cortex.astype(F32), "density": rho, "grain": grain,
            "marrow": marrow.astype(F32), "region": region}


def _pelvis(p: AnatomyParams, pts: tuple[np.ndarray, ...], femur: np.ndarray, spacing
            ) -> tuple[np.ndarray, np.ndarray]:
    """SDFs of the pelvis (acetabulum, ilium, ischium, pubis) and of the joint space."""
    u, v, w = pts
    rh, gap = p.head_radius, p.joint_gap
    opening = _unit([-0.68, 0.22, -0.70])  # the acetabulum faces lateral, inferior, anterior
    r_in = rh + gap
    cup = smax(sphere(pts, np.zeros(3), r_in + 16.0),
               u * F32(opening[0]) + v * F32(opening[1]) + w * F32(opening[2]) - F32(0.12 * rh), 3.0)
    ilium = ellipsoid(pts, np.array([2.0, -8.0, rh + 38.0]), np.array([16.0, 38.0, 45.0]), _rot(1, 22) @ _rot(0, -10))
    bone = smin(cup, ilium, 12.0)
    ischium, _ = capsule(pts, np.array([10.0, -20.0, -6.0]), np.array([16.0, -34.0, -58.0]), 12.0, 10.0)
    tuber = ellipsoid(pts, np.array([16.0, -36.0, -62.0]), np.array([13.0, 15.0, 12.0]))
    bone = smin(bone, smin(ischium, tuber, 8.0), 10.0)
    bone = smax(bone, -_cavity(pts, rh, gap), 4.0)  # a thin quadrilateral plate medial to the acetabulum
    pubis, _ = capsule(pts, np.array([16.0, 20.0, -4.0]), np.array([82.0, 34.0, -22.0]), 11.0, 8.0)
    ramus, _ = capsule(pts, np.array([74.0, 30.0, -30.0]), np.array([30.0, -26.0, -62.0]), 6.5, 7.0)
    bone = smin(bone, pubis, 9.0)
    bone = smin(bone, ramus, 7.0)
    socket = sphere(pts, np.zeros(3), r_in)
    joint = smax(bone, socket, 1.0)  # inside the acetabulum, outside the head
    joint = np.maximum(joint, -(femur - F32(0.01)))
    bone = smax(bone, -socket, 1.5)
    bone = np.maximum(bone, F32(gap) - femur)  # never touches the femur
    return normalize_distance(bone, spacing), joint.astype(F32)


def _cavity(pts: tuple[np.ndarray, ...], rh: float, gap: float) -> np.ndarray:
    return ellipsoid(pts, np.array([rh + gap + 38.0, -4.0, 2.0]), np.array([33.0, 40.0, 46.0]))


def _soft(p: AnatomyParams, pts: tuple[np.ndarray, ...], spacing, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Skin surface, subcutaneous fat, muscles with fat planes, vessels and nerve."""
    u, v, w = pts
    s = p.landmarks()["neck_base"]
    b = p.body
    h = float(np.mean(spacing))
    shape = u.shape
    lift = smoothstep(-140.0, 30.0, w)
    rml = F32(b["thigh_ml"]) * (1.0 + 0.22 * lift)
    rap = F32(b["thigh_ap"]) * (1.0 + 0.18 * lift)
    thigh = (np.sqrt(((u - F32(s[0] - 6.0)) / rml) ** 2 + ((v - F32(s[1] - 12.0)) / rap) ** 2) - 1.0) \
        * np.minimum(rml, rap)
    mid_u = F32(90.0)  # the body midline sits ~9 cm medial of the head centre
    trunk = (np.sqrt(((u - mid_u) / F32(b["trunk_ml"])) ** 2 + ((v + F32(30.0)) / F32(b["trunk_ap"])) ** 2) - 1.0) \
        * F32(min(b["trunk_ml"], b["trunk_ap"]))
    fold = F32(-55.0) - F32(0.12) * np.clip(-v, 0, None) - F32(0.08) * np.clip(u, 0, None)
    trunk = smax(trunk, fold - w, 25.0)
    body = smin(thigh, trunk, 30.0)
    del thigh, trunk, fold, rml, rap, lift
    body = body + F32(b["irregularity_mm"]) * smooth_noise(rng, shape, 25.0 / h)
    body = normalize_distance(body, spacing, floor=0.5)
    posterior = smoothstep(-20.0, -90.0, v) + 0.6 * smoothstep(-20.0, -90.0, u - F32(s[0]))
    fat = F32(b["fat_mm"]) * (1.0 + 0.7 * posterior) * (1.0 + 0.3 * smooth_noise(rng, shape, 15.0 / h))
    fascia = body + F32(b["skin_mm"]) + np.clip(fat, 2.0, None)
    del posterior, fat

    # muscles: a Voronoi partition around the femur, drifting along the thigh, with warped borders
    wu = u + F32(8.0) * smooth_noise(rng, shape, 14.0 / h)
    wv = v + F32(8.0) * smooth_noise(rng, shape, 14.0 / h)
    d1 = np.full(shape, 1e4, dtype=F32)  # nearest and second-nearest seed (weighted distances)
    d2 = np.full(shape, 1e4, dtype=F32)
    which = np.zeros(shape, dtype=np.int16)
    for i, (ang, rad, amp, ph, _, weight) in enumerate(p.muscle_seeds):
        th = F32(ang) + F32(amp) * np.sin(w / F32(70.0) + F32(ph))
        rr = F32(rad) * (1.0 + 0.15 * np.sin(w / F32(90.0) + F32(ph * 1.7)))
        dist = np.sqrt((wu - (F32(s[0]) + rr * np.cos(th))) ** 2 + (wv - (F32(s[1]) + rr * np.sin(th))) ** 2) \
            - F32(weight)
        closer = dist < d1
        np.copyto(d2, np.where(closer, d1, np.minimum(d2, dist)))
        which[closer] = i
        np.minimum(d1, dist, out=d1)
    thick = F32(p.fat_plane_mm) * (1.0 + 0.6 * smooth_noise(rng, shape, 10.0 / h))
    planes = (d2 - d1) * F32(0.5) - np.clip(thick, 0.3, None) * F32(0.5)
    muscle_offset = p.muscle_seeds[:, 4].astype(F32)[which]
    # intramuscular fat: sparse streaks along the fibres (roughly along the thigh)
    streaks = smooth_noise(rng, shape, (9.0 / spacing[0], 1.6 / spacing[1], 1.6 / spacing[2]))
    muscle_offset -= F32(p.body["marbling_hu"]) * np.clip((streaks - 1.7) / 0.8, 0, 1)
    del d1, d2, which, wu, wv, thick, streaks

    # neurovascular bundles in fat: femoral vessels (anteromedial), sciatic nerve (posterior)
    art, _ = capsule(pts, np.array([14.0, 40.0, 45.0]), np.array([-18.0, 22.0, -200.0]), 4.2, 3.6)
    vein, _ = capsule(pts, np.array([26.0, 37.0, 45.0]), np.array([-9.0, 20.0, -200.0]), 5.5, 4.5)
    nerve, _ = capsule(pts, np.array([4.0, -42.0, 40.0]), np.array([s[0] + 2.0, s[1] - 38.0, -200.0]), 4.5, 4.0)
    vessels = np.minimum(np.minimum(art, vein), nerve)
    planes = np.minimum(planes, smin(art, vein, 6.0) - F32(3.0))
    planes = np.minimum(planes, nerve - F32(2.0))
    if p.pelvis:  # pelvic fat medial to the obturator muscle
        planes = np.minimum(planes, _cavity(pts, p.head_radius, p.joint_gap) + F32(12.0)
                            + F32(4.0) * smooth_noise(rng, shape, 6.0 / h))
    return {"body": body, "fascia": fascia.astype(F32), "planes": planes.astype(F32), "vessels": vessels.astype(F32),
            "muscle_offset": muscle_offset}
