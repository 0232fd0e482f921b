"""Operator variability (the paper's Table 1) and STAPLE consensus.

From a cohort whose cases carry several lesion annotations (``annotator``, ``round``,
``expertise`` in the manifest):

* **inter-operator**: every pair of distinct operators on a case, each with its first round,
  grouped by expertise (``novice/novice``, ``novice/expert``, ``expert/expert``);
* **intra-operator**: each operator's first round against each of their later rounds, grouped by
  the operator's expertise;
* **automatic vs operators** (given a predictions folder, files ``<case_id>.nii.gz``): the
  prediction against each operator's first round, grouped ``vs novices`` / ``vs experts``;
* **STAPLE** (SimpleITK's ``STAPLEImageFilter`` over the operators' first rounds): the
  consensus (probability >= 0.5), each rater's estimated sensitivity and specificity, and each
  operator's and the model's Dice against the consensus;
* whether the model lies within the inter-rater range: per case, the model's mean Dice against
  the operators compared with the minimum and maximum inter-operator Dice of that case.

Operators are the annotations with expertise ``novice`` or ``expert``; the ``reference``
annotation is left out unless ``include_reference`` is set (it then counts as an expert).
Every pair also gets HD, HD95 and ASSD; the table shows Dice unless asked otherwise.

Output folder (:func:`write_variability`): Table 1 (``table1.md/.html/.tex``), the pair, case and
STAPLE CSVs, ``variability.json`` and the consensus masks ``staple/<case_id>.nii.gz``; the command
records its inputs in ``variability_inputs.json`` and refuses a folder holding a study of other
inputs (:func:`claim_variability_dir`); its default folder is ``variability/`` beside the cohort
manifest (:func:`default_variability_dir`).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .metrics import METRIC_LABELS, compute_metrics
from .stats import Cell, Table

if TYPE_CHECKING:
    import pandas as pd

    from ..cohort import Cohort, LesionAnnotation
    from ..volume import Volume

log = logging.getLogger(__name__)

# Table 1 columns: (comparison, group, header)
TABLE1_COLUMNS = (
    ("inter", "novice/novice", "Inter-operator: novice/novice"),
    ("inter", "novice/expert", "Inter-operator: novice/expert"),
    ("inter", "expert/expert", "Inter-operator: expert/expert"),
    ("auto", "vs novices", "Automatic vs novices"),
    ("auto", "vs experts", "Automatic vs experts"),
    ("intra", "novices", "Intra-operator: novices"),
    ("intra", "experts", "Intra-operator: experts"),
)


@dataclass
class StapleResult:
    """STAPLE consensus of several binary masks."""

    consensus: "Volume"  # uint8 mask, probability >= threshold
    probability: "Volume"  # float64 per-voxel probability of the true segmentation
    sensitivity: list[float]  # per input mask, STAPLE's estimate
    specificity: list[float]


def staple(masks: Sequence["Volume"], threshold: float = 0.5, max_iterations: int | None = None) -> StapleResult:
    """STAPLE (Warfield et al. 2004) consensus of binary masks on one grid, via SimpleITK."""
    import SimpleITK as sitk

    from ..volume import Volume

    if len(masks) < 2:
        raise InputError(f"STAPLE needs at least two masks, got {len(masks)}")
    first = masks[0]
    for m in masks[1:]:
        diff = first.grid_mismatch(m)
        if diff is not None:
            raise InputError(f"STAPLE: {m.name} is not on the grid of {first.name} ({diff})")
    images = [first.with_array((m.array != 0).astype(np.uint8)).to_sitk() for m in masks]
    filt = sitk.STAPLEImageFilter()
    filt.SetForegroundValue(1.0)
    if max_iterations is not None:
        filt.SetMaximumIterations(int(max_iterations))
    prob = Volume.from_sitk(filt.Execute(images))
    prob = first.with_array(prob.array.astype(np.float64))
    consensus = first.with_array((prob.array >= threshold).astype(np.uint8))
    return StapleResult(consensus, prob, list(filt.GetSensitivity()), list(filt.GetSpecificity()))


@dataclass
class VariabilityResult:
    """Pairwise comparisons, per-case range check and STAPLE figures."""

    pairs: "pd.DataFrame"  # one row per compared pair of masks
    cases: "pd.DataFrame"  # one row per case: inter-operator range, model's mean, within range
    staple: "pd.DataFrame"  # one row per rater (and the model) per case

    def table(self, metrics: Sequence[str] = ("dice",), title: str = "") -> Table:
        """The paper's Table 1: mean ± std per comparison group (columns) and metric (rows)."""
        columns, keys = [], []
        for comparison, group, header in TABLE1_COLUMNS:
            sel = self.pairs[(self.pairs["comparison"] == comparison) & (self.pairs["group"] == group)] \
                if not self.pairs.empty else self.pairs
            if len(sel):
                columns.append(header)
                keys.append((comparison, group))
        rows = []
        for metric in metrics:
            cells = []
            for comparison, group in keys:
                v = self.pairs.loc[(self.pairs["comparison"] == comparison) & (self.pairs["group"] == group),
                                   metric].to_numpy(dtype=float)
                v = v[~np.isnan(v)]
                cells.append(Cell(float(v.mean()) if v.size else math.nan,
                                  float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else math.nan),
                                  decimals=2 if metric == "dice" else 1, n=int(v.size)))
            rows.append((f"Mean {METRIC_LABELS.get(metric, metric)}", cells))
        counts = ", ".join(f"{h.split(': ')[-1]} n={c.n}" for h, c in zip(columns, rows[0][1])) if rows else ""
        notes = ["mean ± std over (case, pair) comparisons; " + counts]
        return Table(columns, rows, row_header="", title=title or "Operator variability", notes=notes)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not self.pairs.empty:
            for (comparison, group), sub in self.pairs.groupby(["comparison", "group"], sort=True):
                d = sub["dice"].to_numpy(dtype=float)
                out.setdefault(comparison, {})[group] = {
                    "n": int(d.size), "dice_mean": float(np.nanmean(d)),
                    "dice_std": float(np.nanstd(d, ddof=1)) if d.size > 1 else 0.0,
                    "dice_min": float(np.nanmin(d)), "dice_max": float(np.nanmax(d)),
                }
        if not self.cases.empty and "auto_mean_dice" in self.cases:
            c = self.cases.dropna(subset=["auto_mean_dice", "inter_min_dice"])
            inter = self.pairs.loc[self.pairs["comparison"] == "inter", "dice"].to_numpy(dtype=float)
            auto = self.pairs.loc[self.pairs["comparison"] == "auto", "dice"].to_numpy(dtype=float)
            out["model_vs_inter_rater_range"] = {
                "n_cases": int(len(c)),
                "n_within_range": int(c["within_range"].sum()),
                "n_at_or_above_min": int(c["at_or_above_min"].sum()),
                "inter_dice_range": [float(inter.min()), float(inter.max())] if inter.size else None,
                "inter_dice_mean": float(inter.mean()) if inter.size else None,
                "auto_dice_mean": float(auto.mean()) if auto.size else None,
                "auto_mean_within_inter_range": bool(inter.size and auto.size
                                                     and inter.min() <= auto.mean() <= inter.max()),
            }
        if not self.staple.empty:
            out["staple"] = {
                rater: {"n": int(len(sub)), "dice_vs_consensus_mean": float(sub["dice_vs_consensus"].mean()),
                        "sensitivity_mean": float(sub["sensitivity"].mean()),
                        "specificity_mean": float(sub["specificity"].mean())}
                for rater, sub in self.staple.groupby("rater", sort=True)
            }
        return out


def operator_variability(
    cohort: "Cohort | str | os.PathLike",
    predictions: str | os.PathLike | None = None,
    include_reference: bool = False,
    run_staple: bool = True,
    staple_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
    progress: bool = False,
) -> VariabilityResult:
    """Inter-/intra-operator, automatic-vs-operator and STAPLE comparisons over a cohort."""
    import pandas as pd

    from ..cohort import Cohort, load_cohort
    from ..volume import Volume, as_mask
    from .evaluate import find_prediction, read_prediction

    cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
    pred_dir = Path(predictions) if predictions is not None else None
    if pred_dir is not None and not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: predictions folder not found (expected files <case_id>.nii.gz)")
    levels = {"novice": "novice", "expert": "expert"}
    if include_reference:
        levels["reference"] = "expert"

    studied = []
    for case in cohort.cases:
        ops = [a for a in case.lesion_masks if a.expertise in levels]
        if ops:
            studied.append((case, ops))
    if not any(len({a.annotator for a in ops}) >= 2 or len(ops) >= 2 for _, ops in studied) and pred_dir is None:
        raise InputError(
            f"cohort {cohort.name!r}: no case has two operator annotations (lesion_masks with expertise "
            "novice/expert, and annotator/round); add them to the manifest, or use --include-reference"
        )

    pair_rows: list[dict[str, Any]] = []
    case_rows: list[dict[str, Any]] = []
    staple_rows: list[dict[str, Any]] = []
    iterator = studied
    if progress:
        from tqdm import tqdm

        iterator = tqdm(studied, desc="variability", unit="case")
    for case, ops in iterator:
        cache: dict[int, Volume] = {}

        def load(ann: "LesionAnnotation") -> Volume:
            key = id(ann)
            if key not in cache:
                ref = next(iter(cache.values()), None)
                cache[key] = as_mask(Volume.read(ann.path), ref,
                                     what=f"lesion mask of case {case.id} ({ann.annotator}, round {ann.round})")
            return cache[key]

        by_annotator: dict[str, list[LesionAnnotation]] = {}
        for ann in ops:
            by_annotator.setdefault(ann.annotator, []).append(ann)
        firsts = {name: sorted(anns, key=lambda a: a.round)[0] for name, anns in by_annotator.items()}

        def add(comparison: str, group: str, a: Any, b: Any, va: Volume, vb: Volume, **extra: Any) -> float:
            m = compute_metrics(va, vb)
            pair_rows.append({"case_id": case.id, "comparison": comparison, "group": group, "a": a, "b": b,
                              **extra, "dice": m.dice, "hd": m.hd, "hd95": m.hd95, "assd": m.assd,
                              "empty": m.empty})
            return m.dice

        inter = []
        for (na, a), (nb, b) in itertools.combinations(sorted(firsts.items()), 2):
            la, lb = levels[a.expertise], levels[b.expertise]
            group = "/".join(sorted((la, lb), key=lambda x: (x != "novice", x)))
            inter.append(add("inter", group, na, nb, load(a), load(b), expertise_a=la, expertise_b=lb,
                             round_a=a.round, round_b=b.round))
        for name, anns in sorted(by_annotator.items()):
            anns = sorted(anns, key=lambda a: a.round)
            level = levels[anns[0].expertise]
            for later in anns[1:]:
                add("intra", f"{level}s", name, name, load(anns[0]), load(later), expertise_a=level,
                    expertise_b=level, round_a=anns[0].round, round_b=later.round)

        pred = None
        if pred_dir is not None:
            path = find_prediction(pred_dir, case.id)
            if path is None:
                if not allow_missing:
                    raise InputError(f"case {case.id}: no prediction {case.id}.nii.gz in {pred_dir}; add it, or "
                                     "pass --allow-missing to leave the case out of the automatic comparison")
                log.warning("case %s: no prediction in %s, automatic comparison skipped", case.id, pred_dir)
            else:
                pred = read_prediction(path, load(next(iter(firsts.values()))), case.id)
        auto = []
        if pred is not None:
            for name, ann in sorted(firsts.items()):
                level = levels[ann.expertise]
                auto.append(add("auto", f"vs {level}s", "model", name, pred, load(ann), expertise_a="model",
                                expertise_b=level, round_a=None, round_b=ann.round))

        if run_staple and len(firsts) >= 2:
            names = sorted(firsts)
            vols = [load(firsts[n]) for n in names]
            if any(v.array.any() for v in vols):
                res = staple(vols)
                if staple_dir is not None:
                    res.consensus.write(Path(staple_dir) / f"{case.id}.nii.gz")
                for n, v, se, sp in zip(names, vols, res.sensitivity, res.specificity):
                    staple_rows.append({"case_id": case.id, "rater": n, "expertise": levels[firsts[n].expertise],
                                        "sensitivity": se, "specificity": sp,
                                        "dice_vs_consensus": compute_metrics(v, res.consensus).dice})
                if pred is not None:
                    staple_rows.append({"case_id": case.id, "rater": "model", "expertise": "model",
                                        "sensitivity": math.nan, "specificity": math.nan,
                                        "dice_vs_consensus": compute_metrics(pred, res.consensus).dice})

        row: dict[str, Any] = {"case_id": case.id, "n_operators": len(firsts),
                               "inter_min_dice": min(inter) if inter else math.nan,
                               "inter_max_dice": max(inter) if inter else math.nan,
                               "inter_mean_dice": float(np.mean(inter)) if inter else math.nan}
        if pred_dir is not None:
            mean_auto = float(np.mean(auto)) if auto else math.nan
            row["auto_mean_dice"] = mean_auto
            ok = bool(inter) and bool(auto)
            row["within_range"] = ok and row["inter_min_dice"] <= mean_auto <= row["inter_max_dice"]
            row["at_or_above_min"] = ok and mean_auto >= row["inter_min_dice"]
        case_rows.append(row)

    pair_cols = ["case_id", "comparison", "group", "a", "b", "expertise_a", "expertise_b", "round_a", "round_b",
                 "dice", "hd", "hd95", "assd", "empty"]
    pairs = pd.DataFrame(pair_rows, columns=pair_cols)
    staple_df = pd.DataFrame(staple_rows, columns=["case_id", "rater", "expertise", "sensitivity", "specificity",
                                                   "dice_vs_consensus"])
    return VariabilityResult(pairs, pd.DataFrame(case_rows), staple_df)


VARIABILITY_INPUTS = "variability_inputs.json"
VARIABILITY_FILES = ("variability_pairs.csv", "variability_cases.csv", "staple.csv", "table1.md", "table1.html",
                     "table1.tex", "variability.json")


def default_variability_dir(manifest: str | os.PathLike) -> Path:
    """Where ``metsynth variability`` writes without ``--out``: ``variability/`` beside the manifest
    (as ``realism`` and ``report`` default to a folder of their main input, never the working directory)."""
    return Path(manifest).parent / "variability"


def variability_inputs(manifest: str | os.PathLike, predictions: str | os.PathLike | None,
                       **settings: Any) -> dict[str, Any]:
    """What a variability study was made from (absolute paths and settings), as recorded in its folder."""
    return {"manifest": str(Path(manifest).resolve()),
            "predictions": str(Path(predictions).resolve()) if predictions is not None else None, **settings}


def claim_variability_dir(out_dir: str | os.PathLike, inputs: dict[str, Any], force: bool = False) -> Path:
    """Check that ``out_dir`` may take a study of ``inputs`` (:class:`metsynth.outdir.OutputFolder`),
    then clear the previous study's outputs there: the study is recomputed whole, tables and
    consensus masks together.

    Allowed: a new or empty folder, the study of the same inputs, or what an interrupted run
    leaves (STAPLE masks, no record). Refused unless ``force``: a study of other inputs
    (``variability_inputs.json`` differs), or a folder of other files (tables without a record
    included). ``force`` replaces the study's own files and leaves other files alone.
    """
    from ..outdir import OutputFolder, recorded_changes

    folder = OutputFolder(Path(out_dir), "a variability study", VARIABILITY_INPUTS,
                          outputs=(VARIABILITY_INPUTS, *VARIABILITY_FILES, "staple/*.nii*"), ignore=("staple",))
    folder.claim(lambda record: recorded_changes(record, inputs), force=force)
    folder.remove_outputs()
    return folder.path


def write_variability(result: VariabilityResult, out_dir: str | os.PathLike, metrics: Sequence[str] = ("dice",),
                      inputs: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the pairs, cases and STAPLE tables (CSV), Table 1 (md/html/tex) and a summary JSON;
    with ``inputs`` (:func:`variability_inputs`), last, the record :func:`claim_variability_dir` checks."""
    from ..fileio import write_json, write_text
    from .evaluate import _json_safe

    out = Path(out_dir)
    table = result.table(metrics)
    paths = {
        "pairs": write_text(out / "variability_pairs.csv", result.pairs.to_csv(index=False)),
        "cases": write_text(out / "variability_cases.csv", result.cases.to_csv(index=False)),
        "staple": write_text(out / "staple.csv", result.staple.to_csv(index=False)),
        "table_md": write_text(out / "table1.md", table.to_markdown()),
        "table_html": write_text(out / "table1.html", table.to_html()),
        "table_tex": write_text(out / "table1.tex", table.to_latex()),
        "summary": write_json(out / "variability.json", _json_safe(result.summary())),
    }
    if inputs is not None:
        paths["inputs"] = write_json(out / VARIABILITY_INPUTS, _json_safe(inputs))
    return paths


__all__ = ["StapleResult", "TABLE1_COLUMNS", "VARIABILITY_FILES", "VARIABILITY_INPUTS", "VariabilityResult",
           "claim_variability_dir", "default_variability_dir", "operator_variability", "staple", "variability_inputs",
           "write_variability"]
