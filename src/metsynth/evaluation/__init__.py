"""Evaluation: metrics in mm, lesion-wise detection, statistics, operator variability, CV splits.

* :mod:`.metrics` — Dice, HD, HD95, ASSD per case (exact, fast) and their aggregation;
* :mod:`.detection` — lesions as connected components, matched by overlap;
* :mod:`.stats` — Kruskal-Wallis, Mann-Whitney U, Wilcoxon, Holm, bootstrap CIs, Tables 2-3;
* :mod:`.variability` — inter/intra-operator and automatic-vs-operator Dice (Table 1), STAPLE;
* :mod:`.splits` — cross-validation folds saved once, and the leakage filter by donor case;
* :mod:`.evaluate` — score a folder of predictions against a cohort (``metsynth evaluate``).
"""

from .detection import DetectionResult, Lesion, detect_lesions, summarize_detection
from .evaluate import EvaluationConfig, EvaluationResult, evaluate_cohort
from .metrics import (
    METRICS,
    CaseMetrics,
    SurfaceDistances,
    aggregate_metrics,
    boundary,
    compute_metrics,
    dice_score,
    fill_worst_case,
    metrics_table,
    surface_distances,
)
from .splits import (
    LeakageReport,
    SplitConfig,
    Splits,
    check_no_leakage,
    leakage_filter,
    load_or_make_splits,
    load_splits,
    make_splits,
    training_index,
)
from .stats import (
    Table,
    bootstrap_ci,
    compare_models,
    holm,
    kruskal_wallis,
    load_results,
    pairwise_tests,
    results_table,
)
from .variability import VariabilityResult, operator_variability, staple, write_variability

__all__ = [
    "METRICS", "CaseMetrics", "DetectionResult", "EvaluationConfig", "EvaluationResult", "LeakageReport", "Lesion",
    "SplitConfig", "Splits", "SurfaceDistances", "Table", "VariabilityResult", "aggregate_metrics", "boundary",
    "bootstrap_ci", "check_no_leakage", "compare_models", "compute_metrics", "detect_lesions", "dice_score",
    "evaluate_cohort", "fill_worst_case", "holm", "kruskal_wallis", "leakage_filter", "load_or_make_splits",
    "load_results", "load_splits", "make_splits", "metrics_table", "operator_variability", "pairwise_tests",
    "results_table", "staple", "summarize_detection", "surface_distances", "training_index", "write_variability",
]
