"""Section 6, statistics: the tests against Real, the difference this run could detect,
lesion-wise detection.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ...layout import display_name
from ..page import Section, data_table, fmt, not_run
from ..tables import detection_html, paper_comparison, size_comparison, size_sentence_labels, tests_html
from .parts import _subpart

if TYPE_CHECKING:
    from ..data import RunData


def statistics_section(run: "RunData") -> Section:
    if not run.evaluated:
        return Section("statistics", "Statistics",
                       not_run("no evaluation yet (<code>evaluation/&lt;model&gt;/metrics.csv</code>)."), False)
    parts = [
        _subpart("Tests: the training sets of Table 3", tests_html, run, paper_comparison(run), True),
        _subpart("Tests: size of the synthetic set", tests_html, run, size_comparison(run), True,
                 _size_reference(run)),
        _subpart("What difference this run could detect", _detectable, run),
        _subpart("Lesion-wise detection", detection_html, run),
    ]
    return Section("statistics", "Statistics", "\n".join(parts))


def _detectable(run: "RunData") -> str:
    """What difference in Dice this run's paired tests could see (80% power, Holm's level)."""
    from ...evaluation.stats import detectable_difference

    models = run.paper_models
    if "real" not in models or len(models) < 2:
        return not_run("needs Real and at least one other model of Table 3 evaluated.")
    labels = [display_name(m) for m in models]
    table = detectable_difference(run.results_for(models), "dice", display_name("real"), labels)
    rows = [[r.model, r.n_paired, fmt(r.sd_diff, 3), fmt(r.detectable, 3)] for r in table.itertuples()]
    n = int(table["n_paired"].min()) if len(table) else 0
    need = ""
    ok = table.dropna(subset=["detectable"])
    if len(ok) and n > 1:
        # the detectable difference shrinks as 1 / sqrt(n): the cases a 0.05 difference would need
        cases = int(math.ceil(n * (float(ok["detectable"].median()) / 0.05) ** 2))
        need = f" Detecting a 0.05 difference with this spread would take about {cases} cases per model."
    return (data_table(["model vs Real", "paired cases", "sd of the Dice differences", "detectable Dice difference"],
                       rows, caption="Smallest mean Dice difference to Real each paired test could detect")
            + f'<p class="tablenote">80% power at Holm\'s strictest level (0.05 / {len(table)}), normal approximation '
              f"of the paired test over the {n} cases scored per model, with the spread of per-case differences this "
              f"run shows. A difference smaller than this can be real and still not reach p &lt; 0.05 here.{need} "
              "These tests treat each trained model as fixed: they see the cases' spread, not the training's. On the "
              "demo, the same models trained again with another seed (<code>segmentation.overrides.seed</code>, same "
              "data) moved a model's mean Dice by up to 0.09, and the paired test called two trainings of one model "
              "different; to tell a training set's effect from one training's luck, repeat the training or the "
              "study with other seeds.</p>")


def _size_reference(run: "RunData") -> str | None:
    """The size study's reference (its smallest set) as it reads in a sentence ("40 synthetic")."""
    return size_sentence_labels(run)[run.size_models[0]] if run.size_models else None
