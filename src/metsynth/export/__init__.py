"""Exports of a run's data to other tools.

* :mod:`.nnunet` — ``export_nnunet``: an nnU-Net v2 raw dataset (imagesTr, labelsTr, imagesTs,
  dataset.json) with a ``splits_final.json`` that honours the leakage rule
  (``metsynth export nnunet``).
"""

from .nnunet import NnunetExportConfig, check_export_leakage, export_nnunet, plan_export, resolve_inputs

__all__ = ["NnunetExportConfig", "check_export_leakage", "export_nnunet", "plan_export", "resolve_inputs"]
