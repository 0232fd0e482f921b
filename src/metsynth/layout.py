"""Where everything lives in an experiment's run directory (one place, read by every stage).

::

    RUN/
      config.yaml                     the resolved experiment config
      stages/<stage>.json             completion markers (fingerprint, seconds, finish time)
      phantom/cohort.yaml             the generated cohort (when the config asks for a phantom)
      prepared/cohort.yaml            prepared cohort (0.85 mm, [-1, 1], femur masks)
      bank/bank.json                  lesion bank (patches + masks)
      synthetic/{images,labels,sidecars}/, index.csv, preview.png
      diffusion/                      DDPM training run (checkpoints, model.pt, loss curve)
      harmonized/{images,labels,sidecars}/, index.csv, preview.png
      sweep/t<T>/                     the synthetic set harmonized from start timestep T (Figure 4 sweep)
      realism/                        realism.json/.md, features.csv: real vs generated lesions (C2ST)
      splits.json                     CV folds over metastatic cases (+ test-only cases)
      models/<model>/fold<k>/         one segmentation training run per model and fold
      cache/                          training volumes unpacked to .npy, shared by every training
      predictions/<model>/<case>.nii.gz   each case predicted by the model of the fold that held it out
                                          (test-only cases: by the fold ensemble)
      evaluation/<model>/metrics.csv, lesions.csv, summary.json
      stats/                          tables (md, html, tex) and tests (json)
      variability/                    Table 1, pairs, STAPLE consensus
      report/index.html               the self-contained report

Model names: ``real``, ``synthetic``, ``synthetic_ft``, ``harmonized``, ``harmonized_ft`` (the
paper's Table 3; the paper calls harmonized "Diffusion"), and ``size_<N>`` for the size study
(Table 2; ``size_all`` is the ``synthetic`` model itself and is not trained twice).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

# The paper's five models, in its Table 3 order, with their display names.
PAPER_MODELS = {
    "real": "Real",
    "synthetic": "Synthetic",
    "synthetic_ft": "Synthetic+FT",
    "harmonized": "Diffusion",
    "harmonized_ft": "Diffusion+FT",
}
# beyond the paper: fresh synthetic volumes during training (the 'online' source), in Table 3 when trained
ONLINE_MODELS = {"online": "Online", "online_ft": "Online+FT"}
TABLE3_MODELS = {**PAPER_MODELS, **ONLINE_MODELS}


def size_model(n: int | str) -> str:
    return f"size_{n}"


def study_models(models: Iterable[str], size_study: Iterable[int | str] = ()) -> set[str]:
    """The model folders a study with these ``models:`` and ``size_study:`` settings makes (its
    size-study models only where it trains Synthetic, as the study does)."""
    names = set(models)
    if "synthetic" in names:  # size_all: the synthetic model evaluated as the size study's full set
        names |= {size_model(n) for n in size_study} | {size_model("all")}
    return names


def display_name(model: str) -> str:
    if model in TABLE3_MODELS:
        return TABLE3_MODELS[model]
    if model.startswith("size_"):
        return model[len("size_"):]
    return model


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def phantom(self) -> Path:
        return self.root / "phantom"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def prepared_manifest(self) -> Path:
        return self.prepared / "cohort.yaml"

    @property
    def bank(self) -> Path:
        return self.root / "bank"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def diffusion(self) -> Path:
        return self.root / "diffusion"

    @property
    def harmonized(self) -> Path:
        return self.root / "harmonized"

    @property
    def sweep(self) -> Path:
        return self.root / "sweep"

    def sweep_set(self, timestep: int) -> Path:
        return self.sweep / f"t{int(timestep)}"

    def sweep_sets(self) -> list[Path]:
        """The sweep's harmonized sets that exist (index.csv written), by start timestep."""
        if not self.sweep.is_dir():
            return []
        found = [p for p in self.sweep.glob("t*") if p.name[1:].isdigit() and (p / "index.csv").is_file()]
        return sorted(found, key=lambda p: int(p.name[1:]))

    @property
    def realism(self) -> Path:
        return self.root / "realism"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def model_dir(self, model: str, fold: int) -> Path:
        return self.root / "models" / model / f"fold{fold}"

    def predictions(self, model: str) -> Path:
        return self.root / "predictions" / model

    def evaluation(self, model: str) -> Path:
        return self.root / "evaluation" / model

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def variability(self) -> Path:
        return self.root / "variability"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def evaluated_models(self, configured: Collection[str] | None = None) -> list[str]:
        """Models with a metrics table, paper models first, then the size study by N. With
        ``configured`` (:func:`study_models` of the run's settings), a Table 3 or size-study model
        outside it is left out: what an earlier setting of the study made, not a row of this one."""
        root = self.root / "evaluation"
        found = sorted(p.parent.name for p in root.glob("*/metrics.csv")) if root.is_dir() else []
        if configured is not None:
            configured = set(configured)
            found = [m for m in found if m in configured or not (m in TABLE3_MODELS or m.startswith("size_"))]
        paper = [m for m in PAPER_MODELS if m in found]
        sizes = sorted((m for m in found if m.startswith("size_")), key=_size_key)
        return paper + sizes + [m for m in found if m not in paper and m not in sizes]


def _size_key(model: str) -> float:
    tail = model[len("size_"):]
    return float("inf") if tail == "all" else float(tail)
