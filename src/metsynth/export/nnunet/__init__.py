"""Export to an nnU-Net v2 raw dataset, with cross-validation splits that honour the leakage rule.

Output, in ``out`` (your ``nnUNet_raw`` folder)::

    DatasetNNN_Name/
      dataset.json             channel_names {"0": "CT"}, labels {"background": 0, "lesion": 1},
                               numTraining, file_ending ".nii.gz", reader SimpleITKIO
      imagesTr/<id>_0000.nii.gz  real metastatic cases + the synthetic/harmonized volumes that
                               some fold may train on
      labelsTr/<id>.nii.gz     lesion labels, uint8 {0, 1}, on exactly the image's grid
      imagesTs/, labelsTs/     the cohort's test-only cases (role ``test``), when it has any
      splits_final.json        one {"train": [...], "val": [...]} per fold of splits.json
      cases.csv                nnU-Net id -> source, case or volume id, donor and healthy case, folds
      metsynth_export.json     settings, input digests, counts (and what a rerun compares)

Identifiers: ``real_<case>``, ``syn_<volume_id>``, ``harm_<volume_id>`` (characters other than
letters, digits, ``-`` and ``_`` become ``-``; a collision is an error).

Folds: fold k of ``splits_final.json`` validates on the real cases of test fold k of
``splits.json`` and trains on the other real cases (``real`` in the sources) plus the
synthetic/harmonized volumes that :func:`metsynth.evaluation.splits.leakage_filter` allows for
fold k: no volume whose donor lesion comes from a case of test fold k or a test-only case, none
built on a test-only healthy case. Each fold is checked again with ``check_no_leakage`` before
anything is written. Volumes allowed in no fold are not exported, so ``nnUNetv2_train ... all``
(every case of imagesTr) never sees test-only data either. ``limit`` keeps N synthetic/harmonized
volumes per fold: the first N of one seeded permutation of the fold's allowed volumes, fold k
seeded with ``seed + k`` (:func:`metsynth.synthesis.sets.fold_volumes`, the rule of metsynth's
own training sets, which the study trains fold k with seed + k: the run's seed gives the run's
size-study volumes).

Intensities: prepared images are standardized to [-1, 1] from a HU window. By default they are
mapped back to HU (:func:`metsynth.prepare.destandardize` with the prepared manifest's
``hu_window``; values outside the window stay clipped at its ends), so nnU-Net's ``CT``
normalization and any HU-based post-processing behave as on scanner data. ``intensity=
"standardized"`` keeps [-1, 1] (nnU-Net's CT normalization is affine-invariant, so training is
the same either way; only the stored values differ).

Files are written through :class:`~metsynth.volume.Volume` (geometry kept exactly) into a
staging folder ``.partial-DatasetNNN_Name`` (an interrupted export resumes there) that is
renamed into place at the end. A dataset folder of other content is refused unless ``force``.

Modules: :mod:`.config` (settings, identifiers, file names), :mod:`.inputs` (what an export reads),
:mod:`.plan` (every case and fold, before writing), :mod:`.write` (:func:`export_nnunet`) and
:mod:`.check` (:func:`check_export_leakage`).
"""

from .check import check_export_leakage
from .config import EXPORT_SOURCES, NnunetExportConfig, dataset_folder_name, nnunet_id, parse_sources
from .inputs import ExportInputs, resolve_inputs, run_seed
from .plan import ExportCase, ExportPlan, plan_export
from .write import ExportSummary, export_nnunet, write_case

__all__ = [
    "EXPORT_SOURCES",
    "ExportCase",
    "ExportInputs",
    "ExportPlan",
    "ExportSummary",
    "NnunetExportConfig",
    "check_export_leakage",
    "dataset_folder_name",
    "export_nnunet",
    "nnunet_id",
    "parse_sources",
    "plan_export",
    "resolve_inputs",
    "run_seed",
    "write_case",
]
