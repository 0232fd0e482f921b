"""``metsynth realism``: how well generated lesions pass for real ones, measured.

The real lesions are the reference masks' connected components in the prepared metastatic and
test cases (``realism.roles``; ``realism.max_real_cases`` keeps a role's first cases only); each
generated set (synthetic, harmonized, a start-timestep sweep) contributes one lesion per kept
volume (its label's largest component), sampled down to as many volumes as there are real
lesions, the same volume ids in every set where they exist (so the sets are compared on
the same pasted lesions). For each set, two classifier two-sample tests (:mod:`.c2st`):
gradient-boosted trees on the lesion features and a small 3D CNN on lesion-centred patches,
grouped by patient (real) and donor case (generated). Beside them, always, the null controls:
real vs real and generated vs generated (each set split at random into two halves); they show the AUC that
chance alone gives with these sample
sizes. Per feature, the median of real and generated lesions and the AUC of that feature alone
name what gives a set away.

A generated set is cut from few donor patients, and patients differ: the donor reference
(:func:`donor_reference`) measures what that alone gives, with the same feature test: copies of the
donors' own real lesions, as many per donor as the set holds, against the real lesions (what a
set of perfect copies would score), and real lesions of as many random patients against the
others (the chance band a set of that many donors meets; each set's features AUC is placed in
it, ``chance_share``).

Output (``OUT``, by default ``RUN/realism``): ``realism.json`` (every number), ``realism.md``
(the tables), ``features.csv`` (every lesion's features), written atomically.

Refused before anything is measured or written: a set whose intensities are in other units than
the cohort's (:func:`check_set_units`: a set synthesized from a prepared cohort, in [-1, 1],
against the raw HU cohort, which the classifier tells apart by units alone).

Too few lesions: on a tiny cohort (a few patients) the training folds hold fewer lesions than the
trees need to make one split (``2 * MIN_SAMPLES_LEAF``, 10), so the classifier gives every held-out
lesion the same score and the AUC is 0.5 [0.5, 0.5] by construction, which would read as "cannot
be told apart". The measure still runs (a study's realism stage goes on, and the per-feature table,
which needs no training, is still worth reading), but such a test is marked: in ``realism.json``
its ``auc`` and ``ci95`` are None with ``not_meaningful`` (the reason), ``not_meaningful`` at the
top lists every such test with what it needs, and ``realism.md`` and the printed summary show
"not meaningful" in place of the number, with that list under the table. Tests with enough
lesions keep their numbers unchanged.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from ..config import Settings
from ..errors import InputError
from ..seeds import REALISM_DONORS, REALISM_NULL, REALISM_SAMPLE
from .c2st import MIN_SAMPLES_LEAF, C2STResult, c2st, cnn_scores, feature_scores
from .features import FEATURES, lesion_components, lesion_features, lesion_patch
from .paired import direction, paired_cell, paired_reading, signed
from .reference import DONOR_REFERENCE, donor_reference_parts

if TYPE_CHECKING:
    from ..cohort import Case, Cohort

log = logging.getLogger(__name__)

__all__ = ["DONOR_REFERENCE", "LesionSample", "RealismConfig", "chance_share", "check_set_units", "compare_sets",
           "donor_copies", "donor_null", "donor_reference", "donor_reference_rows", "donor_reference_text",
           "format_report", "generated_lesions", "measure_realism", "not_meaningful", "paired_cell",
           "paired_difference", "paired_reading", "paired_text", "place_sets", "real_cases", "real_lesions",
           "real_sample_counts", "real_sample_text", "realism_sample_size", "run_sets", "set_sample",
           "signed", "synthesis_adds"]


class RealismConfig(Settings):
    """Settings of the realism measure (``metsynth realism``, the study's ``realism`` stage)."""

    roles: tuple[str, ...] = Field(("metastatic", "test"), description="Roles of the cases whose reference "
                                   "lesions are the real sample.")
    max_real_cases: dict[str, PositiveInt] = Field(
        default_factory=dict, description="At most this many cases of a role give real lesions, the first in the "
        "cohort's order ({test: 24}: the first 24 test cases; a role not named gives every case). It lets a study "
        "score its models on more cases than the realism measure reads: the measure's time, and the sweep's, "
        "grow with the real sample (the demo: 60 test cases scored, 24 measured). Cut the test cases, not the "
        "donors (metastatic): the donor reference compares each set with copies of every donor's own lesions.")
    min_lesion_voxels: int = Field(8, ge=1, description="Lesion components with fewer voxels are left out.")
    max_per_set: int | None = Field(
        None, ge=4, description="Generated lesions per set (None: as many as there are real lesions).")
    ring_mm: float = Field(3.0, gt=0, description="Width of the bone ring around each lesion (features).")
    patch_mm: float = Field(24.0, gt=0, description="Side of the lesion-centred cube the CNN sees (mm).")
    folds: int = Field(5, ge=2, description="Grouped cross-validation folds.")
    repeats: int = Field(3, ge=1, description="Repetitions of the cross-validation with other fold assignments.")
    cnn_epochs: int = Field(30, ge=1, description="Training epochs of the CNN discriminator per fold.")
    cnn: bool = Field(True, description="Run the CNN discriminator (the feature one always runs).")
    cnn_sets: tuple[str, ...] | None = Field(
        ("synthetic", "harmonized"), description="Sets the CNN discriminator measures (None: every set; the "
        "sweep's t<T> sets get the feature discriminator only by default, to keep the measure fast).")
    null_splits: int = Field(5, ge=1, description="Random halves the feature null controls are averaged over "
                             "(one split alone moves by +-0.15 with 50 lesions); the CNN null uses the first.")
    donor_null_splits: int = Field(
        20, ge=0, description="Random draws of as many real patients as the generated sets have donors, each told "
        "from the other real patients by the features test: the AUC that patients' own differences give a set cut "
        "from that few donors (median and 5th-95th percentile; 0: skip). Beside it, copies of the donors' own real "
        "lesions, as many per donor as the set holds, against the real lesions: what perfect copies would score.")
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples of the 95% interval.")
    seed: int = Field(0, ge=0, description="Seed of the sampling, the folds, the classifiers and the bootstrap.")

    @field_validator("max_real_cases")
    @classmethod
    def _caps_name_roles(cls, caps: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        roles = info.data.get("roles", ())  # absent when roles itself failed: that error is reported
        unknown = sorted(set(caps) - set(roles))
        if roles and unknown:
            raise ValueError(f"names {', '.join(unknown)}, not among roles ({', '.join(roles)}): name a role the "
                             "real sample reads, or add it to roles")
        return caps


@dataclass
class LesionSample:
    key: str
    group: str
    source: str
    features: dict[str, float]
    patch: np.ndarray = field(repr=False)


def _patch_size(spacing: tuple[float, float, float], patch_mm: float) -> int:
    n = int(round(patch_mm / float(min(spacing))))
    return max(8, n + (n % 2))


def real_lesions(manifest: str | os.PathLike, config: RealismConfig) -> list[LesionSample]:
    """Every reference lesion component of the cohort's ``config.roles`` cases."""
    from ..cohort import load_case, load_cohort

    out: list[LesionSample] = []
    for case in real_cases(load_cohort(manifest), config):
        loaded = load_case(case)
        image, femur = loaded.image, loaded.femur
        size = _patch_size(image.spacing, config.patch_mm)
        comps = lesion_components(loaded.lesion.array, config.min_lesion_voxels)  # type: ignore[union-attr]
        for k, comp in enumerate(comps, start=1):
            feats = lesion_features(image.array, comp, image.spacing, None if femur is None else femur.array,
                                    config.ring_mm)
            out.append(LesionSample(f"real/{case.id}/L{k}", case.group, "real", feats,
                                    lesion_patch(image.array, comp, size)))
    if len(out) < 4:
        raise InputError(f"{manifest}: only {len(out)} real lesion(s) of at least {config.min_lesion_voxels} voxels "
                         f"in the {'/'.join(config.roles)} cases; the realism test needs at least 4")
    return out


def real_cases(cohort: Cohort, config: RealismConfig) -> list[Case]:
    """The cases whose reference lesions are the real sample: those of ``config.roles`` with a reference mask, in the
    cohort's order, each role cut to its first ``config.max_real_cases[role]``."""
    taken: Counter[str] = Counter()
    out = []
    for case in cohort.by_role(*config.roles):
        cap = config.max_real_cases.get(case.role)
        if case.reference_lesion() is None or (cap is not None and taken[case.role] >= cap):
            continue
        taken[case.role] += 1
        out.append(case)
    return out


def real_sample_counts(manifest: str | os.PathLike, config: RealismConfig) -> dict[str, list[int]]:
    """Role -> [cases the real sample reads, cases with a reference mask]: what ``max_real_cases`` left out."""
    from ..cohort import load_cohort

    cohort = load_cohort(manifest)
    used = Counter(c.role for c in real_cases(cohort, config))
    have = Counter(c.role for c in cohort.by_role(*config.roles) if c.reference_lesion() is not None)
    return {role: [used[role], have[role]] for role in config.roles if have[role]}


def real_sample_text(report: dict[str, Any]) -> str:
    """How many real lesions from how many patients, and which roles ``max_real_cases`` cut (realism.md, report)."""
    cut = [f"the first {used} of {have} {role} cases" for role, (used, have) in report.get("real_cases", {}).items()
           if used < have]
    return (f"Real lesions: {report['n_real']} from {report['real_groups']} patients"
            + (f" ({', '.join(cut)}: realism.max_real_cases)" if cut else ""))


def real_lesion_count(manifest: str | os.PathLike, config: RealismConfig) -> int:
    """How many real lesions :func:`real_lesions` finds (without measuring them)."""
    from ..cohort import load_cohort
    from ..volume import Volume

    total = 0
    for case in real_cases(load_cohort(manifest), config):
        total += len(lesion_components(Volume.read(case.reference_lesion().path).array,  # type: ignore[union-attr]
                                       config.min_lesion_voxels))
    return total


def realism_sample_size(manifest: str | os.PathLike, config: RealismConfig) -> int:
    """How many volumes of each set the measure reads (``max_per_set``, else as many as there are real lesions):
    what a start-timestep sweep harmonizes so that the measure finds its sample (:func:`sample_volume_ids`)."""
    return config.max_per_set or real_lesion_count(manifest, config)


def sample_volume_ids(folder: str | os.PathLike, n: int, seed: int, subset: int | None = None) -> list[str]:
    """``n`` kept volume ids of a set, drawn without replacement (seeded), in a fixed order.

    ``subset``: only that many of them, drawn from the ``n`` (seeded). The start-timestep sweep takes
    its volumes so when ``sweep.volumes`` is smaller than the realism sample, so that the realism
    measure, which draws ``n``, finds every swept volume in its sample (drawn apart, a sweep of 16
    of 240 volumes shared one volume with a sample of 53, and the study failed at its realism stage).
    """
    from ..synthesis.sets import read_set

    ids = sorted(read_set(folder)["volume_id"])
    if len(ids) > n:
        rng = np.random.default_rng(np.random.SeedSequence([seed, REALISM_SAMPLE]))
        ids = sorted(rng.choice(ids, n, replace=False).tolist())
    if subset is not None and subset < len(ids):
        rng = np.random.default_rng(np.random.SeedSequence([seed, REALISM_SAMPLE, 1]))
        ids = sorted(rng.choice(ids, subset, replace=False).tolist())
    return ids


def set_sample(folder: str | os.PathLike, sample: list[str], first_ids: set[str], n: int, seed: int) -> list[str]:
    """The volumes of one set that the realism measure reads.

    A set made from the first set's volumes (most of its volume ids are among ``first_ids``: a harmonized set,
    each start timestep, however many volumes harmonizing dropped) is read on ``sample``, the first set's sample,
    where it holds them, so that the sets are compared lesion for lesion. A set of other volumes (another
    synthesis, another cohort's naming) is sampled on its own, ``n`` of its volumes (:func:`sample_volume_ids`).
    """
    from ..synthesis.sets import read_set

    own = set(read_set(folder)["volume_id"])
    if 2 * len(own & first_ids) >= len(own):
        return [i for i in sample if i in own]
    return sample_volume_ids(folder, n, seed)


def generated_lesions(folder: str | os.PathLike, manifest: str | os.PathLike, source: str,
                      volume_ids: list[str], config: RealismConfig) -> list[LesionSample]:
    """One lesion per listed volume of a synthetic or harmonized set (ids missing there are skipped)."""
    from ..cohort import load_cohort
    from ..synthesis.sets import read_set
    from ..volume import Volume

    table = read_set(folder).set_index("volume_id")
    cohort = load_cohort(manifest)
    femurs: dict[str, np.ndarray | None] = {}
    out: list[LesionSample] = []
    for vid in volume_ids:
        if vid not in table.index:
            continue
        row = table.loc[vid]
        image = Volume.read(row["image"])
        label = Volume.read(row["label"]).array
        comps = lesion_components(label, config.min_lesion_voxels)
        if not comps:
            continue
        healthy = str(row["healthy_case"])
        if healthy not in femurs:
            case = cohort.case(healthy) if healthy in {c.id for c in cohort.cases} else None
            femurs[healthy] = (Volume.read(case.femur_mask).array.astype(bool)
                               if case is not None and case.femur_mask is not None else None)
        femur = femurs[healthy]
        if femur is not None and femur.shape != label.shape:
            femur = None
        feats = lesion_features(image.array, comps[0], image.spacing, femur, config.ring_mm)
        size = _patch_size(image.spacing, config.patch_mm)
        group = str(cohort.case(str(row["donor_case"])).group) if str(row["donor_case"]) in {
            c.id for c in cohort.cases} else str(row["donor_case"])
        out.append(LesionSample(f"{source}/{vid}", group, source, feats, lesion_patch(image.array, comps[0], size)))
    return out


def run_sets(run: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """A study run's prepared manifest and its generated sets: ``synthetic``, ``harmonized`` and
    each start timestep of the sweep (``t<T>``, :mod:`metsynth.diffusion.sweep`), where present."""
    from ..layout import RunLayout

    layout = RunLayout(Path(run))
    if not layout.prepared_manifest.is_file():
        raise InputError(f"{run}: no prepared cohort ({layout.prepared_manifest}); is this a study run folder? "
                         "Run `metsynth experiment run CONFIG -o RUN --until synthesize` first")
    sets: dict[str, Path] = {}
    for name, folder in (("synthetic", layout.synthetic), ("harmonized", layout.harmonized)):
        if (folder / "index.csv").is_file():
            sets[name] = folder
    for folder in layout.sweep_sets():
        sets[folder.name] = folder
    if not sets:
        raise InputError(f"{run}: no synthetic or harmonized set yet (index.csv); run the study up to synthesize")
    return layout.prepared_manifest, sets


def _matrix(samples: list[LesionSample]) -> np.ndarray:
    return np.array([[s.features[k] for k in FEATURES] for s in samples], dtype=np.float64)


def _patches(samples: list[LesionSample]) -> np.ndarray:
    return np.stack([s.patch for s in samples])


def _tests(a: list[LesionSample], b: list[LesionSample], config: RealismConfig, seed: int,
           cnn: bool = True) -> dict[str, C2STResult]:
    y = np.array([0] * len(a) + [1] * len(b))
    groups = np.array([s.group for s in a + b])
    out = {"features": c2st(_matrix(a + b), y, groups, feature_scores, config.folds, config.repeats, seed,
                            config.bootstrap)}
    if config.cnn and cnn:
        def scorer(xt, yt, xe, s):
            return cnn_scores(xt, yt, xe, s, epochs=config.cnn_epochs)

        out["cnn"] = c2st(_patches(a + b), y, groups, scorer, config.folds, 1, seed, config.bootstrap)
    return out


def null_control(samples: list[LesionSample], config: RealismConfig, seed: int, cnn: bool = True) -> dict[str, Any]:
    """Both discriminators on random halves of one set: the AUC chance gives with these sizes.

    The feature test is repeated over ``config.null_splits`` splits (one cross-validation each) and
    reported as the median with the range (``ci95`` holds the min and max over the splits); the CNN
    test runs on the first split.
    """
    if len(samples) < 4:
        return {}
    aucs, out, empty = [], {}, []
    config = config.model_copy(update={"repeats": 1})  # the splits themselves are the repetitions
    for k in range(config.null_splits):
        first, second = _halves(samples, seed + 7919 * k)
        try:
            tests = _tests(first, second, config, seed + k, cnn=cnn and k == 0)
        except ValueError as err:  # a half from a single group: this split cannot be cross-validated
            log.info("null control split %d skipped: %s", k, err)
            continue
        aucs.append(tests["features"].auc)
        if tests["features"].not_meaningful is not None:
            empty.append(tests["features"])
        if "cnn" in tests:
            out["cnn"] = tests["cnn"].to_dict()
    if not aucs:
        return out
    out["features"] = {"auc": round(float(np.median(aucs)), 4), "ci95": [round(min(aucs), 4), round(max(aucs), 4)],
                       "splits": len(aucs), "aucs": [round(a, 4) for a in aucs]}
    if empty:  # a split whose classifier learned nothing: its 0.5 is no measure of chance
        folds = min(t.folds for t in empty)
        if folds < config.folds:
            out["features"]["folds"] = folds
        out["features"].update(
            auc=None, ci95=None,
            not_meaningful=f"{len(empty)} of {len(aucs)} splits: " + empty[0].not_meaningful)  # type: ignore
    return out


def _halves(samples: list[LesionSample], seed: int) -> tuple[list[LesionSample], list[LesionSample]]:
    """Two random halves of one set, drawn lesion by lesion (a permutation null).

    The label is then independent of the groups, so the grouped cross-validation scores what
    chance gives with these sample sizes (about 0.5). Halves drawn group by group would not: with
    few groups, each test fold holds mostly one half and the classifier, trained on the other's
    majority, scores it systematically low (AUCs well below 0.5).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, REALISM_NULL]))
    order = rng.permutation(len(samples))
    first = set(order[: len(samples) // 2].tolist())
    return ([s for i, s in enumerate(samples) if i in first], [s for i, s in enumerate(samples) if i not in first])


def donor_reference(real: list[LesionSample], generated: list[LesionSample], config: RealismConfig,
                    name: str, test: C2STResult | None = None) -> dict[str, Any]:
    """What a set cut from the donors of ``generated`` (set ``name``) scores before anything is synthesized.

    A generated set holds lesions of few donor patients; the real sample, of many. Patients differ
    (density, lesion texture), so even *real* lesions of so few patients can be told from the
    others, by chance or because the donors are unusual, far more than the lesion-by-lesion halves
    of the null controls show. Two feature tests, with the sets' own folds and repeats, read a
    set's AUC against that:

    * ``copies`` (:func:`donor_copies`): the donors' own real lesions, as many of each donor as the
      set holds, against all real lesions, grouped as the set's test groups them: what a set of
      perfect copies of the donors' lesions would score;
    * ``chance`` (:func:`donor_null`): as many random real patients as the set has donors, against
      the other patients, ``donor_null_splits`` times: median, 5th-95th percentile (``p5_p95``)
      and every draw (``aucs``).

    With ``test``, the set's own features test, ``copies`` also holds ``synthesis_adds``
    (:func:`synthesis_adds`): the set's AUC minus the copies', with a 95% interval paired by donor.

    A test that cannot run says why (``skipped``).
    """
    counts = Counter(g.group for g in generated)
    return {"kind": DONOR_REFERENCE, "set": name, "donor_groups": sorted(counts), "k": len(counts),
            "copies": _copies_test(real, counts, config, generated, test),
            "chance": donor_null(real, len(counts), config)}


def donor_copies(real: list[LesionSample], counts: dict[str, int]) -> list[LesionSample]:
    """The real lesions of each donor (``counts``: donor -> lesions in the set), repeated in key order to its
    count; donors that are not among the real patients give none."""
    own: dict[str, list[LesionSample]] = {}
    for sample in sorted(real, key=lambda x: x.key):
        own.setdefault(sample.group, []).append(sample)
    return [own[d][i % len(own[d])] for d in sorted(counts) if d in own for i in range(counts[d])]


def _copies_test(real: list[LesionSample], counts: dict[str, int], config: RealismConfig,
                 generated: list[LesionSample] | None = None, test: C2STResult | None = None) -> dict[str, Any]:
    copies = donor_copies(real, counts)
    present = len({c.group for c in copies})
    if present < 2:
        return {"skipped": f"{present} of the {len(counts)} donor case(s) among the real patients; copies of at "
                           "least 2 are needed"}
    patients = len({s.group for s in real})
    if present == patients:
        return {"skipped": f"the donors are all {patients} real patients, so copies of their lesions are the real "
                           "sample itself; add real lesions of patients who gave none to the bank (e.g. test cases: "
                           "realism.roles) to measure what the donors give"}
    copies_test = _tests(real, copies, config, config.seed, cnn=False)["features"]
    out = {**copies_test.to_dict(), "patients": present}
    if generated is not None and test is not None:
        out["synthesis_adds"] = synthesis_adds(real, generated, test, copies, copies_test, config)
    return out


def synthesis_adds(real: list[LesionSample], generated: list[LesionSample], test: C2STResult,
                   copies: list[LesionSample], copies_test: C2STResult, config: RealismConfig) -> dict[str, Any]:
    """What a set scores above copies of its donors' own real lesions (:func:`donor_copies`), with a 95% interval
    paired by donor: what the synthesis adds to what the donors give.

    The copies hold as many lesions of each donor as the set, and both tests share the real lesions, so both are
    resampled with the same patients and donors (:func:`bootstrap_auc_difference`; the cluster bootstrap draws
    whole donors, so which copy stands beside which generated lesion does not matter). Skipped where a donor is
    not among the real patients (the copies lack it) or a test learned nothing.
    """
    if Counter(c.group for c in copies) != Counter(g.group for g in generated):
        return {"skipped": "not every donor is among the real patients, so the copies hold fewer donors than the set"}
    n = len(real)
    order = np.argsort([g.group for g in generated], kind="stable")  # the copies are in donor order
    in_donor_order = np.concatenate([test.scores[:n], test.scores[n:][order]])
    return _paired_change(real, copies, copies_test, test, in_donor_order, config)


def _paired_change(real: list[LesionSample], second: list[LesionSample], a: C2STResult, b: C2STResult,
                   b_scores: np.ndarray, config: RealismConfig) -> dict[str, Any]:
    """``b``'s features AUC minus ``a``'s with the paired 95% interval (:func:`bootstrap_auc_difference`): both
    tests of ``real`` against ``second``, whose held-out scores are ``a.scores`` and ``b_scores`` (``b``'s, in
    ``second``'s order); ``skipped`` where either test learned nothing."""
    from .c2st import bootstrap_auc_difference

    for t in (a, b):
        if t.not_meaningful is not None:
            return {"skipped": t.not_meaningful}
    y = np.array([0] * len(real) + [1] * len(second))
    groups = np.array([s.group for s in real + second])
    lo, hi = bootstrap_auc_difference(y, a.scores, b_scores, config.bootstrap, config.seed, groups)
    return {"delta_auc": round(b.auc - a.auc, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def donor_null(real: list[LesionSample], k: int, config: RealismConfig) -> dict[str, Any]:
    """Real lesions of ``k`` random patients against the other patients', ``config.donor_null_splits`` draws."""
    patients = sorted({s.group for s in real})
    if config.donor_null_splits == 0:
        return {"skipped": "realism.donor_null_splits is 0"}
    if k < 2 or len(patients) - k < 2:
        return {"skipped": f"{k} donor(s) and {len(patients)} real patients; drawing as many patients as there are "
                           "donors needs at least 2 on each side"}
    quick = config.model_copy(update={"bootstrap": 100})  # the draws' own intervals are not used
    aucs, empty = [], []
    for i in range(config.donor_null_splits):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, REALISM_DONORS, i]))
        chosen = set(rng.choice(patients, size=k, replace=False).tolist())
        test = _tests([s for s in real if s.group not in chosen], [s for s in real if s.group in chosen], quick,
                      config.seed + i, cnn=False)["features"]
        if test.not_meaningful is not None:
            empty.append(test)
        else:
            aucs.append(test.auc)
    out: dict[str, Any] = {"draws": len(aucs), "asked": config.donor_null_splits}
    if not aucs:
        folds = min(t.folds for t in empty)  # what the message's fold count names (fewer with few patients)
        return {**out, "auc": None, "p5_p95": None, **({"folds": folds} if folds < config.folds else {}),
                "not_meaningful": f"the classifier learned nothing in all {len(empty)} draws"}
    p5, p50, p95 = (round(float(v), 4) for v in np.percentile(aucs, [5, 50, 95]))
    return {**out, "auc": p50, "p5_p95": [p5, p95], "aucs": [round(a, 4) for a in aucs]}


def place_sets(real: list[LesionSample], sets: dict[str, dict[str, Any]], reference: dict[str, Any],
               config: RealismConfig) -> dict[str, Any]:
    """Read each set's features AUC against the donor null of as many patients as it has donors.

    ``sets``: name -> its entry (``donor_patients``, ``features``), given its ``chance_share``. The
    reference's own band serves the sets of its donor count; a set cut from another number of donors (sets
    given with ``--set`` from other banks) gets a band of its own, drawn once per count, in the returned
    reference's ``other_bands`` (count -> band).
    """
    others: dict[str, dict[str, Any]] = {}
    for entry in sets.values():
        k = entry["donor_patients"]
        if reference and k != reference["k"] and str(k) not in others:
            others[str(k)] = donor_null(real, k, config)
    if others:
        reference["other_bands"] = others
    for entry in sets.values():
        entry["chance_share"] = chance_share(reference, entry["features"].get("auc"), entry["donor_patients"])
    return reference


def _band(reference: dict[str, Any] | None, k: int | None) -> dict[str, Any]:
    """The donor null of ``k`` patients (the reference's own when ``k`` is None or its donor count)."""
    reference = reference or {}
    if k is None or k == reference.get("k"):
        return reference.get("chance") or {}
    return (reference.get("other_bands") or {}).get(str(k)) or {}


def chance_share(reference: dict[str, Any] | None, auc: float | None, k: int | None = None) -> float | None:
    """Share of the donor null's draws (real patients standing in for the donors) below ``auc``; ``k``: the set's
    donor count, read against draws of as many patients (the reference's own set's when None)."""
    aucs = _band(reference, k).get("aucs")
    if not aucs or auc is None:
        return None
    return float(np.mean(np.asarray(aucs) < auc))


def _univariate(a: list[LesionSample], b: list[LesionSample]) -> list[dict[str, Any]]:
    from sklearn.metrics import roc_auc_score

    rows = []
    y = np.array([0] * len(a) + [1] * len(b))
    x = _matrix(a + b)
    for j, name in enumerate(FEATURES):
        col = x[:, j]
        ok = np.isfinite(col)
        auc = float(roc_auc_score(y[ok], col[ok])) if len(np.unique(y[ok])) == 2 else float("nan")
        rows.append({"feature": name, "real": float(np.nanmedian(col[y == 0])),
                     "generated": float(np.nanmedian(col[y == 1])), "auc": auc,
                     "separation": abs(auc - 0.5) * 2 if np.isfinite(auc) else 0.0})
    return sorted(rows, key=lambda r: -r["separation"])


def compare_sets(real: list[LesionSample], generated: list[LesionSample], config: RealismConfig,
                 cnn: bool = True) -> dict[str, Any]:
    """Both discriminators and the generated-vs-generated null for one set, and the feature table."""
    return _compare(real, generated, config, cnn)[0]


def _compare(real: list[LesionSample], generated: list[LesionSample], config: RealismConfig,
             cnn: bool = True) -> tuple[dict[str, Any], C2STResult]:
    """:func:`compare_sets`, and its features test (its held-out scores pair it with another set's)."""
    if len(generated) < 4:
        raise InputError(f"only {len(generated)} generated lesion(s) to compare; the realism test needs at least 4")
    if len({g.group for g in generated}) < 2 or len({r.group for r in real}) < 2:
        raise InputError("the realism test needs real lesions from at least 2 patients and generated ones from at "
                         "least 2 donors (the folds hold whole patients and donors out)")
    tests = _tests(real, generated, config, config.seed, cnn=cnn)
    result: dict[str, Any] = {name: t.to_dict() for name, t in tests.items()}
    result["null"] = null_control(generated, config, config.seed + 1, cnn=cnn)
    result["features_table"] = _univariate(real, generated)
    result["n_volumes"] = len(generated)
    return result, tests["features"]


def _volume_id(sample: LesionSample) -> str:
    return sample.key[len(sample.source) + 1:]  # keys are SOURCE/VOLUME_ID; a set's name may hold a "/"


def paired_difference(real: list[LesionSample], first: list[LesionSample], first_test: C2STResult,
                      other: list[LesionSample], other_test: C2STResult, config: RealismConfig,
                      name: str) -> dict[str, Any] | None:
    """How much easier (> 0) or harder (< 0) the features test tells ``other`` from real than ``first`` (set
    ``name``), on the same lesions: ``other`` made from ``first``'s volumes (harmonized, a start timestep).

    Each set's own interval (about +-0.1 on the demo) is mostly which patients and donors were drawn; both tests
    share them, so the difference is resampled with the same draws for both (:func:`bootstrap_auc_difference`),
    which leaves the change alone. On the lesions both sets hold, paired by volume id; where one lacks some
    (harmonizing dropped a volume) or holds them in another order, both tests are run again on the shared ones, in
    ``first``'s order (``delta_auc`` is then not the difference of the two sets' own AUCs; ``lesions`` says on how
    many). None where ``other`` is not made from ``first``'s volumes (fewer than half of its lesions are), so it
    has no lesion-for-lesion pair.
    """
    mine = {_volume_id(g): g for g in other}
    shared = [g for g in first if _volume_id(g) in mine]
    if 2 * len(shared) < len(other) or not shared:
        return None
    out: dict[str, Any] = {"set": name, "lesions": len(shared)}
    pairs = [mine[_volume_id(g)] for g in shared]
    if len(shared) < 4 or len({g.group for g in shared}) < 2:
        out["skipped"] = f"{len(shared)} shared lesion(s) from {len({g.group for g in shared})} donor(s)"
        return out
    if [_volume_id(g) for g in other] != [_volume_id(g) for g in first]:  # the held-out scores do not pair up
        first_test = _tests(real, shared, config, config.seed, cnn=False)["features"]
        other_test = _tests(real, pairs, config, config.seed, cnn=False)["features"]
    return {**out, **_paired_change(real, shared, first_test, other_test, other_test.scores, config)}


def measure_realism(manifest: str | os.PathLike, sets: dict[str, str | os.PathLike], out: str | os.PathLike,
                    config: RealismConfig | None = None, progress: bool = True,
                    chosen: int | None = None) -> dict[str, Any]:
    """Measure every set of ``sets`` (name -> folder) against the real lesions of ``manifest``.

    Sets named ``t<T>`` (the start-timestep sweep) are also drawn as the paper's Figure 4
    (``figure4.png``, ``figure4_lesions.png``; ``chosen``: the study's start timestep, marked).
    """
    from ..fileio import write_json, write_text

    config = config or RealismConfig()
    if not sets:
        raise InputError("no generated set to measure; give at least one synthetic or harmonized folder")
    for name, folder in sets.items():
        if not (Path(folder) / "index.csv").is_file():
            raise InputError(f"{folder}: no index.csv (set {name!r}); point to the output folder of "
                             "`metsynth synthesize` or `metsynth harmonize`")
    for name, folder in sets.items():
        check_set_units(manifest, name, folder)
    real = real_lesions(manifest, config)
    n = config.max_per_set or len(real)
    from ..synthesis.sets import read_set

    first_folder = next(iter(sets.values()))
    ids = sample_volume_ids(first_folder, n, config.seed)
    first_ids = set(read_set(first_folder)["volume_id"])
    lesions = {}  # every set's lesions, read (and refused) before any test runs
    for name, folder in sets.items():
        generated = generated_lesions(folder, manifest, name, set_sample(folder, ids, first_ids, n, config.seed),
                                      config)
        if len(generated) < 4 or len({g.group for g in generated}) < 2:
            raise InputError(f"set {name!r} ({folder}): {len(generated)} of its volumes hold a lesion the realism test "
                             f"can read, from {len({g.group for g in generated})} donor(s); it needs at least 4 "
                             "lesions from at least 2 donors (the output of `metsynth synthesize` or `metsynth "
                             "harmonize`, with kept volumes)")
        lesions[name] = generated
    report: dict[str, Any] = {"config": config.model_dump(mode="json"), "n_real": len(real),
                              "real_groups": len({s.group for s in real}),
                              "real_cases": real_sample_counts(manifest, config), "sets": {}}
    report["null_real"] = null_control(real, config, config.seed + 2)
    all_samples = list(real)
    reference: dict[str, Any] = {}
    first: tuple[str, list[LesionSample], C2STResult] | None = None
    items = list(sets.items())
    from tqdm.auto import tqdm

    for name, folder in tqdm(items, desc="realism", unit="set", disable=not progress or len(items) < 2):
        generated = lesions[name]
        cnn = config.cnn_sets is None or name in config.cnn_sets
        donors = len({g.group for g in generated})
        result, features = _compare(real, generated, config, cnn=cnn)
        report["sets"][name] = {"folder": str(folder), **result, "donor_patients": donors}
        all_samples += generated
        if first is None:  # the first set (a study's: the synthetic set, whose volumes the others share)
            first = (name, generated, features)
            reference = donor_reference(real, generated, config, name, features)
        else:
            delta = paired_difference(real, first[1], first[2], generated, features, config, first[0])
            if delta is not None:
                report["sets"][name]["paired"] = delta
        change = report["sets"][name].get("paired")
        log.info("realism %s: features AUC %s%s", name, report["sets"][name]["features"]["auc"],
                 f"; against {change['set']}, same lesions: {paired_cell(change)}" if change else "")
    report["donor_reference"] = place_sets(real, report["sets"], reference, config)
    # the sweep: start timestep -> set name (0: synthetic; the study's own timestep: its harmonized set)
    names = {0: "synthetic"} if "synthetic" in sets else {}
    names.update({int(n[1:]): n for n in sets if n.startswith("t") and n[1:].isdigit()})
    if chosen is not None and "harmonized" in sets and len(names) > 1:
        names.setdefault(int(chosen), "harmonized")
    sweep = {t: Path(sets[n]) for t, n in names.items()}
    if len(sweep) > 1:
        from ..diffusion.sweep import sweep_table

        report["sweep"] = sweep_table(sweep)
        report["chosen_timestep"] = chosen
        for row in report["sweep"]:
            row["set"] = names[row["timestep"]]
            row["features_auc"] = report["sets"][row["set"]]["features"]["auc"]
            paired = report["sets"][row["set"]].get("paired")
            if paired is not None and paired["set"] == names.get(0):  # the change against t = 0 itself
                row["paired"] = paired
    empty = not_meaningful(report)
    if empty:
        report["not_meaningful"] = empty
        log.warning("realism: %d test(s) not meaningful: too few lesions (%d real from %d patients) to train the "
                    "classifier (realism.md lists them)", len(empty), report["n_real"], report["real_groups"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "realism.json", report)
    write_text(out / "realism.md", format_report(report))
    write_text(out / "features.csv", _features_csv(all_samples))
    if len(sweep) > 1:
        from .figure import figure4, figure4_lesions

        figure4(report, report["sweep"], out / "figure4.png", chosen=chosen)
        figure4_lesions(sweep, out / "figure4_lesions.png")
    return report


# ----------------------------------------------------------------------------- units
def _set_intensity(folder: Path, depth: int = 0) -> tuple[dict[str, Any] | None, str | None, str]:
    """The units of a set's volumes: ``(record, cohort it was made from, how known)``.

    ``metsynth synthesize`` records them (``intensity`` in config.yaml, as ``cohort_intensity``
    gives them); a harmonized set is in the units of the synthetic set it was made from
    (``source`` in harmonize.yaml); a set recording neither is judged from one of its images
    (inside [-1, 1]: standardized, window unknown; beyond: HU). ``record`` None: no image to judge.
    """
    from ..config import read_yaml

    config_file = folder / "config.yaml"
    config = read_yaml(config_file, error=InputError) if config_file.is_file() else {}
    record = config.get("intensity")
    origin = str(config["cohort"]) if config.get("cohort") else None
    if isinstance(record, dict) and record.get("units") in ("HU", "standardized"):
        return record, origin, f"recorded in {config_file}"
    harmonize_file = folder / "harmonize.yaml"
    source = (read_yaml(harmonize_file, error=InputError) or {}).get("source") if harmonize_file.is_file() else None
    if source and depth < 3 and Path(source).is_dir() and Path(source).resolve() != folder.resolve():
        found, found_origin, how = _set_intensity(Path(source), depth + 1)
        if found is not None:
            return found, found_origin or origin, f"{how} (the source of {harmonize_file})"
    from ..synthesis.sets import read_set
    from ..volume import Volume

    images = read_set(folder)["image"].tolist()
    if not images:
        return None, origin, ""
    values = np.asarray(Volume.read(images[0]).array, dtype=np.float64)
    values = values[np.isfinite(values)]
    inside = values.size == 0 or float(np.abs(values).max()) <= 1.0 + 1e-3
    how = f"judged from the intensities of {images[0]} ({'inside' if inside else 'beyond'} [-1, 1])"
    return ({"units": "standardized" if inside else "HU", "hu_window": None}, origin, how)


def _describe_units(record: dict[str, Any]) -> str:
    if record["units"] == "HU":
        return "raw HU (not prepared)"
    window = record.get("hu_window")
    if window is None:
        return "standardized to [-1, 1] (HU window unknown)"
    return f"standardized to [-1, 1] from the HU window {float(window[0]):g}..{float(window[1]):g}"


def check_set_units(manifest: str | os.PathLike, name: str, folder: str | os.PathLike) -> None:
    """Refuse to compare a set with a cohort whose intensities are in other units.

    The real lesions are read from ``manifest``'s images (HU for a raw cohort, [-1, 1] for one
    prepared by `metsynth prepare`); a set made from a prepared cohort against its raw source
    would be told apart by the units alone (an AUC of 1 that says nothing about realism), or
    pass for real by chance of the scales. As `metsynth synthesize` refuses a bank of other units
    (:func:`metsynth.synthesis.bank.check_bank_matches`), the units (and, both prepared, the HU
    windows) must match; one-line :class:`InputError` naming the cohort, the set and the fix.
    """
    from ..cohort import load_cohort
    from ..synthesis.bank import cohort_intensity

    folder = Path(folder)
    record, origin, how = _set_intensity(folder)
    if record is None:
        return
    target = cohort_intensity(load_cohort(manifest))
    if record["units"] != target["units"]:
        mismatch = "their intensity units differ"
    elif (record["units"] == "standardized" and record.get("hu_window") is not None
          and not np.allclose(record["hu_window"], target["hu_window"])):
        mismatch = "their HU windows differ"
    else:
        return
    fix = (f"measure it against the prepared manifest it was made from (--cohort {origin})" if origin else
           "measure it against the prepared manifest it was made from (the cohort.yaml of `metsynth prepare`'s "
           "--out folder)" if record["units"] == "standardized" else
           "measure it against the cohort it was made from, in the same units")
    raise InputError(f"set {name!r} ({folder}) does not fit cohort {manifest}, {mismatch}: the set's volumes are "
                     f"{_describe_units(record)} ({how}) but the cohort's images are {_describe_units(target)}, so a "
                     f"classifier would tell them apart by their units alone; {fix}")


# ----------------------------------------------------------------------------- too few lesions
def not_meaningful(report: dict[str, Any]) -> list[str]:
    """Every test of ``report`` whose classifier learned nothing, with why and what it needs."""
    config = report.get("config", {})
    tests = [("real vs real (null)", report.get("null_real", {}), report["n_real"])]
    for name, entry in report["sets"].items():
        tests.append((name, entry, report["n_real"] + entry["n_volumes"]))
        tests.append((f"{name} null (generated halves)", entry.get("null", {}), entry["n_volumes"]))
    tests += [(label, {"features": t}, total) for label, t, total in _donor_tests(report)]
    lines = []
    for label, entry, total in tests:
        for key in ("features", "cnn"):
            test = entry.get(key) or {}
            if test.get("not_meaningful"):
                folds = int(test.get("folds") or config.get("folds", 5))
                lines.append(f"{label}, {key} ({total} lesions, {folds} folds): {test['not_meaningful']}; every "
                             f"training fold needs at least {2 * MIN_SAMPLES_LEAF} lesions (the trees' leaves hold "
                             f"{MIN_SAMPLES_LEAF}): more real lesions from more patients")
    return lines


def _features_csv(samples: list[LesionSample]) -> str:
    lines = [",".join(["key", "group", "source", *FEATURES])]
    for s in samples:
        lines.append(",".join([s.key, s.group, s.source, *(f"{s.features[k]:.6g}" for k in FEATURES)]))
    return "\n".join(lines) + "\n"


def _fmt(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    if t.get("not_meaningful") or t.get("auc") is None:
        return "not meaningful"
    return f"{t['auc']:.2f} [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]"


def _all_tests(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"real vs real {k}", t) for k, t in report.get("null_real", {}).items() if isinstance(t, dict)]
    for name, s in report["sets"].items():
        out += [(f"{name} {k}", s[k]) for k in ("features", "cnn") if isinstance(s.get(k), dict)]
        out += [(f"{name} null {k}", t) for k, t in (s.get("null") or {}).items() if isinstance(t, dict)]
    return out + [(label, t) for label, t, _ in _donor_tests(report)]


def _donor_tests(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    """The donor reference's tests that ran: (label, test, lesions)."""
    _, copies, chance = donor_reference_parts(report)
    out = []
    if copies and "skipped" not in copies:
        out.append(("copies of the donors' lesions", copies, report["n_real"] + int(copies.get("n_b") or 0)))
    if chance and "skipped" not in chance:
        out.append(("donor null", chance, report["n_real"]))
    for k, band in _other_bands(report):
        if "skipped" not in band:
            out.append((f"donor null of {k} patients", band, report["n_real"]))
    return out


def _other_bands(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The donor nulls drawn for sets of another donor count than the reference's set (``--set`` sets), by count."""
    ref, _, _ = donor_reference_parts(report)
    return sorted((ref.get("other_bands") or {}).items(), key=lambda kb: int(kb[0]))


def _band_cell(chance: dict[str, Any]) -> str:
    return "not meaningful" if chance.get("auc") is None else \
        f"{chance['auc']:.2f} (5th-95th percentile {chance['p5_p95'][0]:.2f}-{chance['p5_p95'][1]:.2f})"


def _draws(chance: dict[str, Any]) -> str:
    return str(chance["draws"]) if chance["draws"] == chance["asked"] else f"{chance['draws']} of {chance['asked']}"


def donor_reference_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The donor reference (:func:`donor_reference`) as table rows: (what, lesions, features AUC)."""
    ref, copies, chance = donor_reference_parts(report)
    rows = []
    if copies and "skipped" not in copies:
        rows.append((f"real: copies of the donors' own lesions, as many per donor as the {ref['set']} set holds "
                     f"({copies['patients']} patients)", str(copies.get("n_b", "-")), _fmt(copies)))
    if chance and "skipped" not in chance:
        rows.append((f"real: {ref['k']} random patients vs the others (donor null, {_draws(chance)} draws)", "-",
                     _band_cell(chance)))
    for k, band in _other_bands(report):
        if "skipped" not in band:
            sets = ", ".join(n for n, s in report["sets"].items() if str(s.get("donor_patients")) == k)
            rows.append((f"real: {k} random patients vs the others (donor null for {sets}, {_draws(band)} draws)",
                         "-", _band_cell(band)))
    return rows


def donor_reference_text(report: dict[str, Any]) -> str:
    """What the donor reference says about the sets' feature AUCs, and why a part of it did not run ("" when
    the report has none)."""
    ref, copies, chance = donor_reference_parts(report)
    if not ref:
        return ""
    text, k = [], ref["k"]
    if chance.get("auc") is not None:
        text.append(f"The {ref['set']} set is cut from {k} donor patients. Real lesions of {k} patients drawn at "
                    f"random are told from the other patients' with AUC up to {chance['p5_p95'][1]:.2f} (95th "
                    "percentile) by chance alone, since patients differ: read a set's features AUC against that band, "
                    "not against 0.5.")
    shares, draws = [], []
    for name, s in report["sets"].items():
        if s.get("chance_share") is None or s["features"].get("auc") is None:
            continue
        own = s.get("donor_patients") in (None, k)
        band = _band(ref, s.get("donor_patients"))
        shares.append(f"{name} ({s['features']['auc']:.2f}) is above {_share(s['chance_share'], band['draws'])}"
                      + ("" if own else f" of {s['donor_patients']} patients"))
        draws.append(band["draws"])
    if shares:
        text.append("Against the draws: " + "; ".join(shares) + ".")
    if draws and min(draws) < 50:
        text.append(f"With {min(draws)} draws the band's edges and these shares are rough (on the demo its 95th "
                    "percentile moves by 0.04 AUC (one standard deviation), up to 0.08, with the draws); "
                    "realism.donor_null_splits: 100 pins them.")
    if copies.get("auc") is not None:
        text.append(f"Copies of the donors' own real lesions, with their own surroundings and position, score "
                    f"{copies['auc']:.2f}: what the donors' lesions give before any synthesis.")
        adds = copies.get("synthesis_adds") or {}
        if adds.get("delta_auc") is not None:
            verdict = {1: "the synthesis adds a giveaway of its own",
                       -1: "the set is harder to tell from real than its donors' lesions",
                       0: "no more than the donors give (the interval holds 0)"}[direction(adds)]
            text.append(f"The {ref['set']} set scores {paired_cell(adds)} against them (paired by donor): "
                        f"{verdict}.")
    skipped = [("No copies of the donors' lesions", copies), ("No donor null", chance)]
    skipped += [(f"No donor null of {n} patients", band) for n, band in _other_bands(report)]
    text += [f"{what}: {part['skipped']}." for what, part in skipped if part.get("skipped")]
    return " ".join(text)


def _delta_header(report: dict[str, Any]) -> str:
    first = next(iter(report["sets"]), "first set")
    return f"features AUC - {first}'s, same lesions [95%]"


def paired_text(report: dict[str, Any]) -> str:
    """The paired differences in words ("" when no set is paired with the first)."""
    pairs = [(name, s["paired"]) for name, s in report["sets"].items() if s.get("paired")]
    if not pairs:
        return ""
    first = pairs[0][1]["set"]
    said = []
    for name, d in pairs:
        if d.get("delta_auc") is None:
            said.append(f"{name} not compared ({d.get('skipped', 'no interval')})")
            continue
        fewer = d["lesions"] < min(report["sets"][name]["n_volumes"], report["sets"][first]["n_volumes"])
        said.append(f"{name} {paired_cell(d)}, {paired_reading(d)}"
                    + (f" (on the {d['lesions']} lesions both hold, both tests run again)" if fewer else ""))
    return (f"Against the {first} set on the same lesions (the sets made from its volumes; both tests resampled "
            "with the same patients and donors, so the interval is of the change alone; the classifiers' own "
            "randomness moves the difference too, by a standard deviation of 0.01-0.02 on the demo, so a bound within "
            "0.02 of 0 is a close call): "
            + "; ".join(said) + ".")


def _share(value: float, draws: int) -> str:
    return f"all {draws} draws" if value == 1.0 else f"{100 * value:.0f} % of the draws"


def format_report(report: dict[str, Any], top: int = 5) -> str:
    """The realism tables as Markdown (what ``metsynth realism`` prints)."""
    nr = report["null_real"]
    lines = [
        f"{real_sample_text(report)}. AUC 0.5 = cannot be told apart, "
        "1 = always told apart; [95% bootstrap interval, whole patients/donors resampled]. Null controls: the same "
        "test between two random halves of one set (features: median [range] over "
        f"{report['config'].get('null_splits', 1)} splits; CNN: one split), the AUC chance alone gives.",
        "",
        "| set | lesions | features AUC | CNN AUC | null (generated halves) features / CNN | "
        f"{_delta_header(report)} |",
        "|---|---|---|---|---|---|",
        f"| real vs real (null) | {report['n_real']} | {_fmt(nr.get('features'))} | {_fmt(nr.get('cnn'))} | | |",
    ]
    for name, s in report["sets"].items():
        null = s.get("null", {})
        lines.append(f"| {name} | {s['n_volumes']} | {_fmt(s.get('features'))} | {_fmt(s.get('cnn'))} | "
                     f"{_fmt(null.get('features'))} / {_fmt(null.get('cnn'))} | {paired_cell(s.get('paired'))} |")
    lines += [f"| {what} | {n} | {auc} | - | | |" for what, n, auc in donor_reference_rows(report)]
    for reading in (paired_text(report), donor_reference_text(report)):
        if reading:
            lines += ["", reading]
    if report.get("not_meaningful"):
        lines += ["", f"**Not meaningful**: too few lesions ({report['n_real']} real from {report['real_groups']} "
                  "patients) for the classifier to learn anything in its training folds; such an AUC is 0.5 by "
                  "construction and says nothing about realism (the per-feature AUCs below need no training):", ""]
        lines += [f"- {line}" for line in report["not_meaningful"]]
    reduced = sorted({(label, t["folds"]) for label, t in _all_tests(report) if t.get("folds")})
    if reduced:
        lines += ["", f"Fewer folds than the {report['config'].get('folds')} asked (too few patients or donors): "
                  + ", ".join(f"{label}: {k}" for label, k in reduced) + "."]
    for name, s in report["sets"].items():
        lines += ["", f"What gives **{name}** away (median real vs generated; AUC of the feature alone):", "",
                  "| feature | real | generated | AUC alone |", "|---|---|---|---|"]
        for row in s["features_table"][:top]:
            lines.append(f"| {row['feature']} | {row['real']:.4g} | {row['generated']:.4g} | {row['auc']:.2f} |")
    if report.get("sweep"):
        lines += ["",
                  "Start-timestep sweep (Figure 4; contrast kept: lesion contrast after / before harmonization):",
                  "",
                  "| start timestep | features AUC | change, same lesions [95%] | contrast kept (median) | "
                  "10th percentile | collapsed |",
                  "|---|---|---|---|---|---|"]
        for row in report["sweep"]:
            auc = "-" if row.get("features_auc") is None else f"{row['features_auc']:.2f}"
            kept = "-" if row.get("contrast_kept") is None else f"{row['contrast_kept']:.2f}"
            p10 = "-" if row.get("contrast_kept_p10") is None else f"{row['contrast_kept_p10']:.2f}"
            lines.append(f"| {row['timestep']} | {auc} | {paired_cell(row.get('paired'))} | {kept} | {p10} | "
                         f"{row.get('collapsed', 0)} |")
    return "\n".join(lines) + "\n"
