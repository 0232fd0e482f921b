"""Operator variability (Table 1), STAPLE, and the inter-rater range check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.eval_builders import build_cohort, write_predictions
from metsynth.cohort import load_cohort
from metsynth.errors import InputError
from metsynth.evaluation.metrics import dice_score
from metsynth.evaluation.variability import operator_variability, staple, write_variability
from metsynth.volume import Volume


def _mask(case, annotator, rnd=1):
    ann = next(a for a in case.lesion_masks if a.annotator == annotator and a.round == rnd)
    return Volume.read(ann.path).array


def test_pairs_groups_and_values(cohort_with_annotators, tmp_path):
    manifest, refs = cohort_with_annotators
    preds = write_predictions(tmp_path / "pred", refs)
    result = operator_variability(manifest, preds)
    cohort = load_cohort(manifest)
    p = result.pairs
    n_cases = len(refs)  # 3 metastatic + 1 test case, all annotated
    counts = p.groupby(["comparison", "group"]).size().to_dict()
    assert counts == {("inter", "novice/novice"): n_cases, ("inter", "novice/expert"): 2 * n_cases,
                      ("intra", "novices"): 2 * n_cases, ("auto", "vs novices"): 2 * n_cases,
                      ("auto", "vs experts"): n_cases}
    case = cohort.case("M01")
    row = p[(p["case_id"] == "M01") & (p["comparison"] == "inter") & (p["group"] == "novice/novice")].iloc[0]
    assert row["dice"] == pytest.approx(dice_score(_mask(case, "A"), _mask(case, "B")))
    intra = p[(p["case_id"] == "M01") & (p["comparison"] == "intra") & (p["a"] == "A")].iloc[0]
    assert intra["dice"] == pytest.approx(dice_score(_mask(case, "A", 1), _mask(case, "A", 2)))
    assert (intra["round_a"], intra["round_b"]) == (1, 2)
    auto = p[(p["case_id"] == "M01") & (p["group"] == "vs experts")].iloc[0]
    pred = Volume.read(preds / "M01.nii.gz").array
    assert auto["dice"] == pytest.approx(dice_score(pred, _mask(case, "C")))
    assert {"hd", "hd95", "assd"} <= set(p.columns) and p["hd"].notna().all()

    table = result.table()
    assert table.columns == ["Inter-operator: novice/novice", "Inter-operator: novice/expert",
                             "Automatic vs novices", "Automatic vs experts", "Intra-operator: novices"]
    nn = p.loc[(p["comparison"] == "inter") & (p["group"] == "novice/novice"), "dice"]
    assert table.rows[0][1][0].mean == pytest.approx(nn.mean())
    assert table.rows[0][1][0].std == pytest.approx(nn.std(ddof=1))
    assert "Mean Dice" in table.to_markdown() and "\\pm" in table.to_latex()

    cases = result.cases.set_index("case_id")
    for cid in refs:
        inter = p[(p["case_id"] == cid) & (p["comparison"] == "inter")]["dice"]
        auto_mean = p[(p["case_id"] == cid) & (p["comparison"] == "auto")]["dice"].mean()
        assert cases.loc[cid, "inter_min_dice"] == pytest.approx(inter.min())
        assert cases.loc[cid, "auto_mean_dice"] == pytest.approx(auto_mean)
        assert cases.loc[cid, "within_range"] == (inter.min() <= auto_mean <= inter.max())
    summary = result.summary()
    assert summary["model_vs_inter_rater_range"]["n_cases"] == n_cases
    assert set(summary["staple"]) == {"A", "B", "C", "model"}

    out = write_variability(result, tmp_path / "out")
    assert all(path.is_file() for path in out.values())


def test_reference_only_cohort_is_an_error_unless_included(tmp_path):
    manifest, refs = build_cohort(tmp_path / "c", annotators=False)
    with pytest.raises(InputError, match="no case has two operator annotations"):
        operator_variability(manifest)
    preds = write_predictions(tmp_path / "pred", refs)
    res = operator_variability(manifest, preds, include_reference=True)
    assert set(res.pairs["group"]) == {"vs experts"}
    assert res.pairs["dice"].lt(1).all()


def test_missing_prediction_is_an_error_naming_the_case(cohort_with_annotators, tmp_path):
    manifest, refs = cohort_with_annotators
    preds = write_predictions(tmp_path / "pred", refs, skip=("M02",))
    with pytest.raises(InputError, match="case M02: no prediction"):
        operator_variability(manifest, preds)
    res = operator_variability(manifest, preds, allow_missing=True, run_staple=False)
    assert "M02" not in set(res.pairs.loc[res.pairs["comparison"] == "auto", "case_id"])
    assert res.staple.empty


def test_staple_consensus_and_rater_estimates():
    grid = np.ogrid[:20, :20, :20]
    good = (sum((g - 10) ** 2 for g in grid) <= 36).astype(np.uint8)
    off = np.roll(good, 3, axis=2)
    v = Volume(good, spacing=(2.0, 1.0, 1.0))
    res = staple([v, v.with_array(good.copy()), v.with_array(off)])
    assert dice_score(res.consensus.array, good) == pytest.approx(1.0)
    assert res.consensus.spacing == (2.0, 1.0, 1.0)
    assert res.sensitivity[0] == pytest.approx(1.0) and res.sensitivity[2] < 0.9
    assert 0 <= res.probability.array.min() and res.probability.array.max() <= 1
    with pytest.raises(InputError, match="at least two masks"):
        staple([v])
    with pytest.raises(InputError, match="not on the grid"):
        staple([v, Volume(good)])


def test_phantom_annotators_if_available(tmp_path):
    """The built-in phantom's per-annotator masks go through the variability study."""
    phantom = pytest.importorskip("metsynth.phantom")
    generate = getattr(phantom, "generate_case", None)
    if generate is None:
        from metsynth.phantom.case import generate_case as generate  # noqa: PLC0415
    config_mod = pytest.importorskip("metsynth.phantom.config")
    try:
        config = config_mod.PhantomConfig.preset("tiny") if hasattr(config_mod.PhantomConfig, "preset") \
            else config_mod.PhantomConfig()
        case = generate("T00", "test", 0, config)
    except Exception as err:  # the phantom is another helper's work in progress
        pytest.skip(f"phantom not usable yet: {type(err).__name__}: {err}")
    masks = {key: vol for key, vol in case.annotations.items()}
    if len({a for a, _ in masks}) < 2:
        pytest.skip("phantom case has fewer than two annotators")
    if not any(vol.array.any() for vol in masks.values()):
        pytest.skip("the phantom's annotator masks are all empty (phantom work in progress)")
    entries = []
    for (annotator, rnd), vol in masks.items():
        path = tmp_path / f"{annotator}_{rnd}.nii.gz"
        vol.write(path)
        profile = config.annotators[annotator]
        expertise = getattr(profile, "expertise", "novice")
        entries.append({"path": str(path), "annotator": annotator, "round": rnd, "expertise": expertise})
    case.image.write(tmp_path / "image.nii.gz")
    import yaml

    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump({"name": "phantom", "cases": [
        {"id": "T00", "image": "image.nii.gz", "role": "test", "lesion_masks": entries}]}))
    res = operator_variability(tmp_path / "cohort.yaml")
    inter = res.pairs[res.pairs["comparison"] == "inter"]["dice"]
    assert len(inter) >= 1 and ((inter > 0) & (inter < 1)).all()
    assert not math.isnan(res.table().rows[0][1][0].mean)
