"""The plan of an export: every case and every fold, decided before anything is written."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import ConfigError, InputError
from ...fileio import file_sha256
from .config import NnunetExportConfig, dataset_folder_name, nnunet_id
from .inputs import ExportInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportCase:
    """One exported case: where it comes from and what it becomes."""

    nnunet_id: str
    subset: Literal["Tr", "Ts"]
    source: str                      # real | synthetic | harmonized
    case: str                        # real case id or volume id
    image: str                       # absolute source paths
    label: str | None
    donor_case: str | None = None
    healthy_case: str | None = None
    train_folds: tuple[int, ...] = ()
    val_fold: int | None = None


@dataclass
class ExportPlan:
    """Everything to write, decided before writing anything (see :func:`plan_export`)."""

    config: NnunetExportConfig
    inputs: ExportInputs
    cases: list[ExportCase]
    splits_final: list[dict[str, list[str]]]
    hu_window: tuple[float, float]
    dropped_leaking: list[int]       # per fold: synthetic/harmonized volumes the leakage filter removed
    not_exported: int                # volumes allowed in no fold (or beyond --limit in every fold)
    inputs_digest: dict[str, str] = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        return dataset_folder_name(self.config.dataset_id, self.config.name)

    @property
    def training(self) -> list[ExportCase]:
        return [c for c in self.cases if c.subset == "Tr"]

    @property
    def test(self) -> list[ExportCase]:
        return [c for c in self.cases if c.subset == "Ts"]

    def fingerprint(self) -> dict[str, Any]:
        """What makes two exports the same: settings and the digests of every input file."""
        return {"settings": self.config.model_dump(mode="json"), "inputs": dict(self.inputs_digest)}

    def fingerprint_hash(self) -> str:
        text = json.dumps(self.fingerprint(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _real_case(case, subset: str, annotator: str | None, **extra: Any) -> ExportCase:
    ann = case.reference_lesion(annotator)
    if ann is None and subset == "Tr":
        raise InputError(f"case {case.id}: metastatic case without a lesion mask; add it to the manifest")
    return ExportCase(nnunet_id("real", case.id), subset, "real", case.id, str(case.image),
                      str(ann.path) if ann is not None else None, **extra)  # type: ignore[arg-type]


def plan_export(inputs: ExportInputs, config: NnunetExportConfig) -> ExportPlan:
    """Decide every file and every fold (reads manifests and indexes only; writes nothing)."""
    from ...cohort import load_cohort
    from ...evaluation.splits import check_no_leakage, check_splits_match, load_splits
    from ...seeds import fold_seed
    from ...synthesis.sets import fold_volumes, read_set

    cohort = load_cohort(inputs.cohort)
    if cohort.prepared is None:
        raise InputError(f"{inputs.cohort}: not a prepared cohort (no 'prepared:' block with the HU window); export "
                         "the output of `metsynth prepare` (RUN/prepared/cohort.yaml)")
    splits = load_splits(inputs.splits)
    check_splits_match(splits, cohort, inputs.splits)
    known = [c.id for c in cohort.cases]
    if config.limit is not None and not any(s in ("synthetic", "harmonized") for s in config.sources):
        raise ConfigError(f"limit={config.limit} applies to synthetic/harmonized volumes, but the sources are "
                          f"{','.join(config.sources)}; add 'synthetic' or 'harmonized' or drop --limit")

    sets = [read_set(folder, source) for source, folder in
            (("synthetic", inputs.synthetic), ("harmonized", inputs.harmonized))
            if source in config.sources and folder is not None]
    pool = fold_volumes(sets, None, None).volumes

    chosen_per_fold: list[list[str]] = []
    dropped: list[int] = []
    for k in range(splits.n_folds):
        # the volumes metsynth's own training of fold k takes (leakage filter, then --limit's subset)
        chosen = fold_volumes(sets, splits, k, known_cases=known, limit=config.limit,
                              seed=fold_seed(config.seed, k))
        check_no_leakage(chosen.volumes, splits, k, known_cases=known)  # never write a leaking fold
        dropped.append(chosen.dropped_leaking)
        chosen_per_fold.append(list(chosen.volumes["key"]))

    folds_of: dict[str, list[int]] = {}
    for k, keys in enumerate(chosen_per_fold):
        for key in keys:
            folds_of.setdefault(key, []).append(k)

    cases: list[ExportCase] = []
    for cid in sorted(splits.cases):
        k_val = splits.fold_of(cid)
        train = tuple(k for k in range(splits.n_folds) if k != k_val) if "real" in config.sources else ()
        cases.append(_real_case(cohort.case(cid), "Tr", config.annotator, train_folds=train, val_fold=k_val))
    for row in pool.itertuples(index=False):
        if row.key not in folds_of:
            continue
        healthy = str(row.healthy_case) or None
        cases.append(ExportCase(nnunet_id(row.source, row.volume_id), "Tr", row.source, str(row.volume_id),
                                row.image, row.label, str(row.donor_case), healthy, tuple(folds_of[row.key])))
    if config.test_cases:
        for cid in sorted(splits.test_only):
            cases.append(_real_case(cohort.case(cid), "Ts", config.annotator))

    seen: dict[str, ExportCase] = {}
    for c in cases:
        if c.nnunet_id in seen:
            other = seen[c.nnunet_id]
            raise InputError(f"nnU-Net id {c.nnunet_id!r} is given to both {other.source} {other.case!r} and "
                             f"{c.source} {c.case!r} (unsafe characters become '-'); rename one of them")
        seen[c.nnunet_id] = c

    splits_final = []
    for k in range(splits.n_folds):
        train = [c.nnunet_id for c in cases if c.subset == "Tr" and k in c.train_folds]
        val = [nnunet_id("real", cid) for cid in splits.test(k)]
        if not train:
            raise ConfigError(f"fold {k}: the training set for sources {','.join(config.sources)} is empty; check the "
                              "cohort roles, the splits and the synthetic index")
        splits_final.append({"train": train, "val": val})

    digests = {"cohort": file_sha256(inputs.cohort, 16), "splits": file_sha256(inputs.splits, 16)}
    for source, folder in (("synthetic", inputs.synthetic), ("harmonized", inputs.harmonized)):
        if folder is not None and source in config.sources:
            digests[source] = file_sha256(folder / "index.csv", 16)
    pool_keys = set(pool["key"]) if len(pool) else set()
    if pool_keys - set(folds_of):
        log.info("%d synthetic/harmonized volume(s) are in no fold's training set (leakage filter or --limit) "
                 "and are not exported", len(pool_keys - set(folds_of)))
    hu_window = (float(cohort.prepared.hu_window[0]), float(cohort.prepared.hu_window[1]))
    return ExportPlan(config, inputs, cases, splits_final, hu_window, dropped, len(pool_keys - set(folds_of)), digests)
