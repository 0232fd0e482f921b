"""Section 4, the paper's Figure 5: segmentation examples, and how the cases are picked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...layout import TABLE3_MODELS, display_name
from .. import figures
from ..page import Section, esc, figure, not_run

if TYPE_CHECKING:
    from ..data import RunData


def examples_section(run: "RunData", n_cases: int = 3) -> Section:
    title = "Segmentation examples (Figure 5)"
    models = [m for m in TABLE3_MODELS if run.shown(m) and run.layout.predictions(m).is_dir()]
    if not models:
        models = sorted(p.name for p in (run.root / "predictions").glob("*") if p.is_dir()
                        and not p.name.startswith("size_"))
    if not run.prepared or not models:
        what = "prepared cohort (<code>prepared/cohort.yaml</code>)" if not run.prepared else \
            "predictions (<code>predictions/&lt;model&gt;/&lt;case&gt;.nii.gz</code>, stage predict)"
        return Section("examples", title, not_run(f"no {what}."), False)
    examples = pick_examples(run, models, n_cases)
    if not examples:
        return Section("examples", title, not_run("no real case with a lesion mask and a prediction."), False)
    labels = [display_name(m) for m in models]
    png = figures.segmentation_examples(examples, models, labels, run.cohort)
    caption = (f'Ground truth <span class="swatch" style="border-color:{figures.TRUTH_COLOUR}"></span> red, '
               f'automatic segmentation <span class="swatch" style="border-color:{figures.PRED_COLOUR}"></span> '
               "green. Per case: a coronal slice of the prepared field of view and an axial close-up, both through "
               "the largest true lesion. Cases chosen without looking at the pictures: sorted by the mean Dice of "
               "the shown models, then taken evenly from best to worst: " +
               ", ".join(esc(e.label) for e in examples) + ". Each title gives the model's Dice on that case.")
    return Section("examples", title, figure(png, caption, "segmentation examples"))


def pick_examples(run: "RunData", models: Sequence[str], n_cases: int) -> list[figures.ExampleCase]:
    from ...evaluation.evaluate import find_prediction

    cohort = run.cohort
    if cohort is None:
        return []
    dice: dict[tuple[str, str], float] = {}
    if run.results is not None:
        for r in run.results[["model", "case_id", "dice"]].itertuples(index=False):
            dice[(str(r.model), str(r.case_id))] = float(r.dice)
    candidates = []
    for case in cohort.by_role("test", "metastatic"):
        ann = case.reference_lesion()
        if ann is None:
            continue
        preds = {m: p for m in models if (p := find_prediction(run.layout.predictions(m), case.id)) is not None}
        if not preds:
            continue
        d = {m: dice[(m, case.id)] for m in models if (m, case.id) in dice}
        mean = float(np.nanmean(list(d.values()))) if d and not all(math.isnan(v) for v in d.values()) else -1.0
        label = f"{case.id} ({case.role}, centre {case.centre})"
        candidates.append((mean, case.id, figures.ExampleCase(case.id, label, case.image, ann.path, preds, d)))

    if not candidates:
        return []
    candidates.sort(key=lambda t: (-t[0], t[1]))
    picks = sorted({int(i) for i in np.linspace(0, len(candidates) - 1, min(n_cases, len(candidates))).round()})
    return [candidates[i][2] for i in picks]
