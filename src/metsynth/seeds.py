"""Named seed streams: where each of metsynth's random draws comes from.

Every draw is ``numpy.random.default_rng(SeedSequence([seed, ...]))`` with the run's seed and a
fixed stream number (or the ids of what is drawn), never a global generator and never a
worker's: the same seed gives the same bytes on one process or many. The numbers below are
those the draws have always used; naming them changes no output.

=====================  ======  =====================================================================
stream                 number  draws
=====================  ======  =====================================================================
VALIDATION_CASES       7       which real training cases of a fold validate (segmentation)
SIZE_STUDY_SUBSET      11      which synthetic volumes a ``--limit N`` training takes
EPOCH_ORDER            3       the order of an epoch's patches, ``[seed, epoch, 3]`` (segmentation)
REALISM_SAMPLE         0x5EA1  which volumes of a set the realism measure compares
REALISM_NULL           0x4A1F  the random halves of the realism null controls
REALISM_DONORS         0xD0A0  which real patients stand in for the donors (realism donor null)
PHANTOM_ANATOMY        1       a phantom case's anatomy noise fields
PHANTOM_LESION         3       a phantom lesion's shape
PHANTOM_NOISE          7       a phantom case's scanner noise
PHANTOM_ANNOTATOR      11      a phantom annotator's contour errors
=====================  ======  =====================================================================

Folds: the study trains fold k with ``seed + k`` (:func:`fold_seed`), its validation cases,
patches, weights and size-study subset alike.
"""

from __future__ import annotations

VALIDATION_CASES = 7
SIZE_STUDY_SUBSET = 11
EPOCH_ORDER = 3
REALISM_SAMPLE = 0x5EA1
REALISM_NULL = 0x4A1F
REALISM_DONORS = 0xD0A0
PHANTOM_ANATOMY = 1
PHANTOM_LESION = 3
PHANTOM_NOISE = 7
PHANTOM_ANNOTATOR = 11


def fold_seed(seed: int, fold: int) -> int:
    """The seed the study trains fold ``fold`` with (validation cases, patches, weights, subset)."""
    return seed + fold


__all__ = ["EPOCH_ORDER", "PHANTOM_ANATOMY", "PHANTOM_ANNOTATOR", "PHANTOM_LESION", "PHANTOM_NOISE", "REALISM_DONORS",
           "REALISM_NULL", "REALISM_SAMPLE", "SIZE_STUDY_SUBSET", "VALIDATION_CASES", "fold_seed"]
