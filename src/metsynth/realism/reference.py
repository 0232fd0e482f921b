"""What kind of donor reference a realism report holds, read the same way by the measure and its figure.

Below both :mod:`.measure` (which writes the reference) and :mod:`.figure` (which draws it), so
neither imports the other for it.
"""

from __future__ import annotations

from typing import Any

#: What the realism measure's donor reference tests (:func:`metsynth.realism.measure.donor_reference`): a
#: realism.json of another kind (the first version's donors against the other patients) is not read as this one,
#: and a study's realism stage records it (such a run measures again).
DONOR_REFERENCE = "copies"

__all__ = ["DONOR_REFERENCE", "donor_reference_parts"]


def donor_reference_parts(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The report's donor reference with its copies and chance tests; empty for a report without one or with
    another kind (a realism.json written by an earlier version)."""
    ref = report.get("donor_reference") or {}
    if ref.get("kind") != DONOR_REFERENCE:
        return {}, {}, {}
    return ref, ref.get("copies") or {}, ref.get("chance") or {}
