"""The study's stages in order (:func:`build_stages`) and what each one does, the trainings aside
(:mod:`metsynth.experiment.training`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..layout import TABLE3_MODELS, study_models
from ..realism.features import FEATURES
from ..realism.reference import DONOR_REFERENCE
from ..stages import RunContext, Stage
from .config import ExperimentConfig, diffusion_settings
from .training import _claim, _layout, _stage_size_study, _stage_train, _train, trained_models

log = logging.getLogger(__name__)


def _synthesis_print(config: ExperimentConfig) -> dict:
    """The synthesis settings a run's stage marker is compared on; ``image_layout`` and
    ``placement.match_donor_contact`` only when they are not the default, so that the runs made before
    they existed (whole images, the first valid position) stay done."""
    settings = config.synthesis.model_dump(mode="json")
    if settings.get("image_layout") == "whole":
        del settings["image_layout"]
    if settings["placement"].get("match_donor_contact") == 0:
        del settings["placement"]["match_donor_contact"]
    return settings


def _realism_sample(config: ExperimentConfig) -> dict:
    """What decides the realism stage's sample of generated volumes (:func:`_stage_sweep` draws from it)."""
    r = config.realism
    sample: dict[str, Any] = {"max_per_set": r.max_per_set, "roles": list(r.roles),
                              "min_lesion_voxels": r.min_lesion_voxels}
    if r.max_real_cases:  # left out when unset, so that runs made before it stay done
        sample["max_real_cases"] = dict(r.max_real_cases)
    return {"sample": sample}


def build_stages(config: ExperimentConfig) -> list[Stage]:
    c = config
    stages = [
        Stage("cohort", _stage_cohort, config=lambda ctx: [c.seed, c.cohort.model_dump(mode="json")],
              description="the cohort (generated phantom or your manifest), checked"),
        Stage("prepare", _stage_prepare, ("cohort",), lambda ctx: c.prepare.model_dump(mode="json"),
              "femur masks, crop, resampling, intensity standardization"),
        # placement.match_donor_contact needs each lesion's surface contact, which banks extracted before
        # it existed lack: such a study extracts its bank again (others keep theirs)
        Stage("bank", _stage_bank, ("prepare",),
              lambda ctx: {**c.bank.model_dump(mode="json"),
                           **({"surface_contact": True} if c.synthesis.placement.match_donor_contact else {})},
              "lesion bank"),
        Stage("synthesize", _stage_synthesize, ("prepare", "bank"),
              lambda ctx: [c.seed, _synthesis_print(c)], "ad-hoc lesion synthesis"),
        Stage("diffusion", _stage_diffusion, ("prepare",),
              lambda ctx: [c.seed, c.diffusion.model_dump(mode="json"), c.trainer.model_dump()], "DDPM training"),
        Stage("harmonize", _stage_harmonize, ("synthesize", "diffusion"), lambda ctx: c.seed,
              "SDEdit/DDIM harmonization of the synthetic set"),
        # the sweep harmonizes the realism stage's sample (or sweep.volumes of it): what sizes that sample is
        # part of the record where sweep.volumes or realism.max_real_cases is set (left out otherwise, so that
        # older runs stay done)
        Stage("sweep", _stage_sweep, ("synthesize", "diffusion"),
              lambda ctx: [c.seed, c.sweep.model_dump(mode="json"), c.realism.seed, c.diffusion.model_dump(mode="json"),
                           *([_realism_sample(c)] if c.sweep.volumes or c.realism.max_real_cases else [])],
              "the synthetic volumes harmonized from each start timestep (Figure 4)"),
        # the features measured, and the donor reference's kind, are part of the stage's record: a run
        # measured before one was added (surface_contact; the copies of the donors) measures again when resumed
        # (realism.max_real_cases only when set, so that runs made before it stay done)
        Stage("realism", _stage_realism, ("synthesize", "harmonize", "sweep"),
              lambda ctx: {**c.realism.model_dump(mode="json", exclude=None if c.realism.max_real_cases
                                                  else {"max_real_cases"}),
                           "features": list(FEATURES), "donor_reference": DONOR_REFERENCE},
              "can a classifier tell generated lesions from real ones (C2ST, null controls)"),
        Stage("splits", _stage_splits, ("prepare",), lambda ctx: c.splits.model_dump(mode="json"), "CV folds"),
        Stage("train", _stage_train, ("synthesize", "harmonize", "splits"),
              lambda ctx: [c.seed, c.models, c.segmentation.model_dump(mode="json"), c.trainer.model_dump()],
              "the paper's models, every fold"),
        Stage("size_study", _stage_size_study, ("synthesize", "splits"),
              lambda ctx: [c.seed, c.size_study, c.segmentation.model_dump(mode="json"), c.trainer.model_dump()],
              "models on subsets of the synthetic set"),
        # the method is part of the stage's record: a run of an earlier version (test-only cases by a vote
        # of the folds' masks) predicts again when resumed
        Stage("predict", _stage_predict, ("train", "size_study"), lambda ctx: {"test_only": "fold ensemble"},
              "sliding-window inference on each fold's held-out cases"),
        Stage("evaluate", _stage_evaluate, ("predict",), lambda ctx: c.evaluation.model_dump(mode="json"),
              "Dice, HD, HD95, ASSD, lesion-wise detection"),
        Stage("stats", _stage_stats, ("evaluate",), lambda ctx: None, "Kruskal-Wallis, pairwise tests, tables"),
        Stage("variability", _stage_variability, ("predict",), lambda ctx: c.variability_model,
              "inter/intra-operator variability (Table 1)"),
        # the report shows the realism results too: measured again, they are reported again
        Stage("report", _stage_report, ("stats", "variability", "realism"), lambda ctx: None, "HTML report"),
    ]
    if not config.needs_harmonized():
        stages = [s for s in stages if s.name not in ("diffusion", "harmonize", "sweep")]
        for s in stages:
            s.needs = tuple(n for n in s.needs if n not in ("diffusion", "harmonize", "sweep"))
    return stages


TRAINING_STAGES = ("diffusion", "train", "size_study")


def _cohort_manifest(ctx: RunContext) -> Path:
    cfg: ExperimentConfig = ctx.config
    if cfg.cohort.manifest is not None:
        return Path(cfg.cohort.manifest)
    return _layout(ctx).phantom / "cohort.yaml"


def _stage_cohort(ctx: RunContext) -> None:
    from ..cohort import check_cohort, load_cohort

    cfg: ExperimentConfig = ctx.config
    if cfg.cohort.phantom is not None:
        from ..phantom import PhantomConfig, generate_cohort

        spec = cfg.cohort.phantom
        generate_cohort(_layout(ctx).phantom, n_healthy=spec.healthy, n_metastatic=spec.metastatic,
                        n_test=spec.test, seed=cfg.seed, config=PhantomConfig.preset(spec.preset),
                        preview=False, progress=ctx.progress, workers=cfg.parallel.workers, **_claim(ctx))
    check_cohort(load_cohort(_cohort_manifest(ctx)))


def _stage_prepare(ctx: RunContext) -> None:
    from ..cohort import load_cohort
    from ..prepare import prepare_cohort

    cfg: ExperimentConfig = ctx.config
    # a preparation of other settings is replaced (the study owns the folder); same-settings cases are kept
    prepare_cohort(load_cohort(_cohort_manifest(ctx)), _layout(ctx).prepared, cfg.prepare, **_claim(ctx),
                   progress=ctx.progress, workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler)


def _stage_bank(ctx: RunContext) -> None:
    from ..synthesis.bank import extract_bank

    layout = _layout(ctx)
    extract_bank(layout.prepared_manifest, layout.bank, ctx.config.bank, **_claim(ctx), progress=ctx.progress)


def _stage_synthesize(ctx: RunContext) -> None:
    from ..synthesis.run import run_synthesis

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    run_synthesis(layout.prepared_manifest, layout.bank, layout.synthetic, cfg.synthesis.merged(seed=cfg.seed),
                  workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler, progress=ctx.progress,
                  **_claim(ctx), preview=cfg.preview)


def _stage_diffusion(ctx: RunContext) -> None:
    from ..diffusion.train import train_diffusion

    cfg: ExperimentConfig = ctx.config
    t = cfg.trainer
    _train(ctx, train_diffusion, _layout(ctx).prepared_manifest, _layout(ctx).diffusion, diffusion_settings(cfg),
           accelerator=t.accelerator, devices=t.devices, precision=_short_precision(t.precision),
           strategy=t.strategy, num_nodes=t.num_nodes, resume=True, **_claim(ctx), progress=ctx.progress)


def _stage_harmonize(ctx: RunContext) -> None:
    from ..diffusion.harmonize import harmonize_set

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    settings = diffusion_settings(cfg).harmonize.merged(seed=cfg.seed)
    harmonize_set(layout.synthetic, layout.harmonized, layout.diffusion / "model.pt", settings,
                  workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler, progress=ctx.progress,
                  **_claim(ctx), preview=cfg.preview)


def _stage_sweep(ctx: RunContext) -> None:
    from ..diffusion.sweep import sweep_start_timesteps
    from ..realism.measure import realism_sample_size, sample_volume_ids

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    # the realism stage's sample, or that many of it (sweep.volumes): it measures the sweep on what it holds
    n = realism_sample_size(layout.prepared_manifest, cfg.realism)
    ids = sample_volume_ids(layout.synthetic, n, cfg.realism.seed, subset=cfg.sweep.volumes)
    settings = diffusion_settings(cfg).harmonize.merged(seed=cfg.seed)
    # the study's own start timestep is the harmonized set itself (the realism stage reads it there)
    timesteps = tuple(t for t in cfg.sweep.timesteps if t != settings.start_timestep or not cfg.needs_harmonized())
    sweep_start_timesteps(layout.synthetic, layout.diffusion / "model.pt", layout.sweep, ids, timesteps,
                          settings, workers=cfg.parallel.workers, scheduler=cfg.parallel.scheduler,
                          progress=ctx.progress, **_claim(ctx))


def _stage_realism(ctx: RunContext) -> None:
    from ..realism.measure import measure_realism, run_sets

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    manifest, sets = run_sets(layout.root)
    measure_realism(manifest, sets, layout.realism, cfg.realism, progress=ctx.progress,
                    chosen=diffusion_settings(cfg).harmonize.start_timestep if "harmonized" in sets else None)


def _stage_splits(ctx: RunContext) -> None:
    from ..evaluation.splits import load_or_make_splits

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    if layout.splits.exists():
        layout.splits.unlink()  # settings changed (else the stage would be skipped): make them anew
    s = cfg.splits
    load_or_make_splits(layout.splits, layout.prepared_manifest, n_folds=s.n_folds, seed=s.seed, group_by=s.group_by)


def _stage_predict(ctx: RunContext) -> None:
    from ..cohort import Cohort, load_cohort
    from ..devices import resolve_device
    from ..evaluation.splits import load_splits
    from ..segmentation.inference import TEST_ONLY_DIR, combine_fold_predictions, predict_cohort

    cfg: ExperimentConfig = ctx.config
    layout = _layout(ctx)
    cohort = load_cohort(layout.prepared_manifest)
    splits = load_splits(layout.splits)
    # on a CPU: the study's kept worker processes (parallel.reuse_workers: torch is imported once), one thread
    # each, x0.67-0.69 of one process with 2 threads on 2 cores, the same masks (bench_predict_workers.py);
    # on a GPU: in this process
    workers = cfg.parallel.workers if str(resolve_device("auto")) == "cpu" else 1
    for model in trained_models(ctx):
        final = layout.predictions(model)
        for fold in range(splits.n_folds):  # each cross-validated case by the fold that held it out
            ids = set(splits.test(fold))
            sub = Cohort(name=f"{cohort.name}-fold{fold}", prepared=cohort.prepared,
                         cases=[c for c in cohort.cases if c.id in ids])
            fold_dir = final / f"fold{fold}"
            manifest = sub.save(fold_dir / "cases.yaml")
            predict_cohort(layout.model_dir(model, fold) / "model.pt", manifest, fold_dir, workers=workers,
                           scheduler=cfg.parallel.scheduler, **_claim(ctx), progress=ctx.progress)
        if splits.test_only:  # each test-only case by the folds' mean probability (segmentation.ModelEnsemble)
            predict_cohort([layout.model_dir(model, fold) / "model.pt" for fold in range(splits.n_folds)],
                           layout.prepared_manifest, final / TEST_ONLY_DIR, splits=layout.splits, workers=workers,
                           scheduler=cfg.parallel.scheduler, **_claim(ctx), progress=ctx.progress)
        combine_fold_predictions(final, splits)


def _stage_evaluate(ctx: RunContext) -> None:
    from ..evaluation.evaluate import evaluate_cohort

    layout = _layout(ctx)
    for model in trained_models(ctx):
        result = evaluate_cohort(layout.predictions(model), layout.prepared_manifest, ctx.config.evaluation)
        result.write(layout.evaluation(model))


def _stage_stats(ctx: RunContext) -> None:
    from ..evaluation.stats import compare_models, load_results
    from ..fileio import write_json, write_text

    layout = _layout(ctx)
    # a model dropped from models: (or a size from size_study:) keeps its folders, not its rows
    evaluated = layout.evaluated_models(study_models(ctx.config.models, ctx.config.size_study))
    data = load_results({m: layout.evaluation(m) / "metrics.csv" for m in evaluated},
                        worst_case=ctx.config.evaluation.worst_case)
    paper = [m for m in TABLE3_MODELS if m in evaluated]
    groups = {"table3": (paper, "real" if "real" in paper else None, "Segmentation results (Table 3 layout)")}
    sizes = [m for m in evaluated if m.startswith("size_")] + (["synthetic"] if "synthetic" in evaluated else [])
    if len(sizes) > 1:
        groups["table2"] = (sizes, None, "Size of the synthetic training set (Table 2 layout)")
    for key, (models, reference, title) in groups.items():
        if len(models) < 2:
            continue
        comparison = compare_models(data, models=models, reference=reference, title=title,
                                    rng=np.random.default_rng(ctx.config.seed), n_resamples=2000)
        table = comparison.table
        write_text(layout.stats / f"{key}.md", table.to_markdown() + "\n")
        write_text(layout.stats / f"{key}.html", table.to_html() + "\n")
        write_text(layout.stats / f"{key}.tex", table.to_latex() + "\n")
        write_json(layout.stats / f"{key}.json", comparison.to_dict())
        write_text(layout.stats / f"{key}.txt", comparison.report() + "\n")


def _stage_variability(ctx: RunContext) -> None:
    from ..cohort import load_cohort
    from ..evaluation.variability import operator_variability, write_variability

    layout = _layout(ctx)
    cohort = load_cohort(layout.prepared_manifest)
    if not any(len({(a.annotator, a.round) for a in c.lesion_masks}) > 1 for c in cohort.cases):
        log.info("variability: no case has several annotations; skipped")
        return
    result = operator_variability(cohort, predictions=layout.predictions(ctx.config.variability_model),
                                  staple_dir=layout.variability / "staple", allow_missing=True)
    write_variability(result, layout.variability)


def _stage_report(ctx: RunContext) -> None:
    from ..report import write_report

    write_report(ctx.run_dir)


def _short_precision(precision: str) -> str:
    return {"32-true": "32", "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed"}.get(precision, precision)
