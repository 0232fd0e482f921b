"""What the report reads from a run directory (see :mod:`metsynth.layout`), loaded lazily, once.

Nothing here writes. Every reader returns ``None`` (or an empty container) when its input is
absent, so each part of the report can say "not run" instead of failing.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..fileio import read_json
from ..layout import TABLE3_MODELS, RunLayout, display_name, study_models
from ..stages import STAGE_NAMES

if TYPE_CHECKING:
    import pandas as pd

    from ..cohort import Cohort
    from ..evaluation.variability import VariabilityResult

log = logging.getLogger(__name__)

SIZE_ALL = "size_all"


class RunData:
    """Lazy, cached access to a run directory's outputs."""

    def __init__(self, run_dir: str | os.PathLike):
        self.layout = RunLayout(Path(run_dir))

    @property
    def root(self) -> Path:
        return self.layout.root

    # ------------------------------------------------------------------ config & markers
    @functools.cached_property
    def config_text(self) -> str | None:
        path = self.layout.config
        return path.read_text(encoding="utf-8") if path.is_file() else None

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        if self.config_text is None:
            return {}
        import yaml

        try:
            data = yaml.safe_load(self.config_text)
        except yaml.YAMLError:
            log.warning("%s: not valid YAML; shown as text only", self.layout.config)
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def name(self) -> str:
        name = self.config.get("name")
        return str(name) if isinstance(name, (str, int)) and str(name) else self.root.resolve().name

    @functools.cached_property
    def markers(self) -> list[dict[str, Any]]:
        """Stage markers (``stages/*.json``), in order of finish time (the pipeline's order within a second)."""
        folder = self.layout.stages
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = read_json(path)
            except ValueError:
                log.warning("%s: unreadable stage marker, left out", path)
                continue
            if isinstance(data, dict):
                data.setdefault("stage", path.stem)
                out.append(data)
        rank = {name: i for i, name in enumerate(STAGE_NAMES)}
        return sorted(out, key=lambda m: (str(m.get("finished", "")), rank.get(m["stage"], len(rank)), str(m["stage"])))

    # ------------------------------------------------------------------ cohort
    @functools.cached_property
    def cohort_path(self) -> Path | None:
        for path in (self.layout.prepared_manifest, self.layout.phantom / "cohort.yaml"):
            if path.is_file():
                return path
        return None

    @functools.cached_property
    def cohort(self) -> "Cohort | None":
        if self.cohort_path is None:
            return None
        from ..cohort import load_cohort

        return load_cohort(self.cohort_path)

    @property
    def prepared(self) -> bool:
        return self.cohort is not None and self.cohort.prepared is not None

    # ------------------------------------------------------------------ evaluation
    @functools.cached_property
    def study_models(self) -> set[str] | None:
        """The models the study's settings make (``models:`` and the size study), None without them.
        A model dropped from ``models:`` keeps its folders but is nothing of this run's report."""
        models, sizes = self.config.get("models"), self.config.get("size_study")
        if not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
            return None
        if not (isinstance(sizes, list) and all(isinstance(n, int) for n in sizes)):  # not a study's own file
            found = self.layout.evaluated_models()
            return set(models) | {m for m in found if m.startswith("size_")}
        return study_models(models, sizes)

    def shown(self, model: str) -> bool:
        """Whether a model's folders belong in the report (see :attr:`study_models`)."""
        return self.study_models is None or model in self.study_models

    @functools.cached_property
    def evaluated(self) -> list[str]:
        """The evaluated models; in a study's folder only those its settings make."""
        return self.layout.evaluated_models(self.study_models)

    @property
    def paper_models(self) -> list[str]:
        return [m for m in TABLE3_MODELS if m in self.evaluated]

    @functools.cached_property
    def size_models(self) -> list[str]:
        """The size study's models in increasing N; ``size_all`` is the synthetic model unless
        evaluated on its own. Empty when no ``size_<N>`` model was evaluated."""
        sizes = [m for m in self.evaluated if m.startswith("size_") and m != SIZE_ALL]
        if not sizes:
            return []
        if SIZE_ALL in self.evaluated:
            sizes.append(SIZE_ALL)
        elif "synthetic" in self.evaluated:
            sizes.append("synthetic")
        return sizes

    def summary(self, model: str) -> dict[str, Any]:
        path = self.layout.evaluation(model) / "summary.json"
        if not path.is_file():
            return {}
        try:
            data = read_json(path)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def worst_case(self, model: str) -> Any:
        return (self.summary(model).get("settings") or {}).get("worst_case", "diagonal")

    @functools.cached_property
    def results(self) -> "pd.DataFrame | None":
        """All evaluated models' per-case metrics, long format, ``model`` = run-dir model name;
        undefined distances filled with each evaluation's worst case (column ``worst_case_filled``)."""
        if not self.evaluated:
            return None
        import pandas as pd

        from ..evaluation.stats import load_results

        frames = [load_results({m: self.layout.evaluation(m) / "metrics.csv"}, worst_case=self.worst_case(m))
                  for m in self.evaluated]
        return pd.concat(frames, ignore_index=True)

    def results_for(self, models: list[str], labels: dict[str, str] | None = None) -> "pd.DataFrame":
        """The results of ``models`` with the ``model`` column renamed to display labels."""
        if self.results is None:
            raise InputError(f"{self.root}: no evaluation/<model>/metrics.csv to read")
        labels = labels or {m: display_name(m) for m in models}
        sub = self.results[self.results["model"].isin(models)].copy()
        sub["model"] = sub["model"].map(labels)
        return sub

    def lesions(self, model: str) -> "pd.DataFrame | None":
        path = self.layout.evaluation(model) / "lesions.csv"
        if not path.is_file():
            return None
        import pandas as pd

        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    # ------------------------------------------------------------------ synthetic / harmonized sets
    def index_rows(self, folder: Path) -> list[dict[str, str]] | None:
        path = folder / "index.csv"
        if not path.is_file():
            return None
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @functools.cached_property
    def synthetic_index(self) -> list[dict[str, str]] | None:
        return self.index_rows(self.layout.synthetic)

    @functools.cached_property
    def harmonized_index(self) -> list[dict[str, str]] | None:
        return self.index_rows(self.layout.harmonized)

    @property
    def n_synthetic_kept(self) -> int | None:
        rows = self.synthetic_index
        return None if rows is None else sum(1 for r in rows if r.get("kept", "true") == "true")

    @functools.cached_property
    def harmonized_sidecars(self) -> list[dict[str, Any]]:
        folder = self.layout.harmonized / "sidecars"
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = read_json(path)
            except ValueError:
                continue
            if isinstance(data, dict):
                out.append(data)
        return out

    def checkpoints(self) -> list[dict[str, Any]]:
        """Distinct DDPM checkpoints named in the harmonized sidecars, with their volume counts and
        the settings of the first volume: start timestep, ``ddim_steps`` asked for, and the DDIM
        ``timesteps`` actually run (the sidecar's, else computed as the harmonization does)."""
        seen: Counter[tuple[str, str]] = Counter()
        settings: dict[tuple[str, str], dict[str, Any]] = {}
        for data in self.harmonized_sidecars:
            h = data.get("harmonization") or {}
            key = (str(h.get("checkpoint_sha256", "")), str(h.get("checkpoint", "")))
            if not any(key):
                continue
            seen[key] += 1
            if key not in settings:
                ts = h.get("timesteps")
                steps = [int(t) for t in ts] if isinstance(ts, list) and ts else None
                if steps is None:  # an older sidecar: the timesteps the harmonization computes
                    computed = self._ddim_timesteps(h.get("ddim_steps"), h.get("start_timestep"))
                    steps = list(computed) if computed is not None else None
                settings[key] = {"start_timestep": h.get("start_timestep"), "ddim_steps": h.get("ddim_steps"),
                                 "region": h.get("region"), "timesteps": steps}
        return [{"sha256": k[0], "checkpoint": k[1], "volumes": n, **settings[k]} for k, n in seen.items()]

    @functools.cached_property
    def num_train_timesteps(self) -> int | None:
        """T of the run's DDPM (``diffusion/model.yaml`` or ``diffusion/diffusion.yaml``), or None."""
        import yaml

        for name in ("model.yaml", "diffusion.yaml"):
            path = self.layout.diffusion / name
            if not path.is_file():
                continue
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                continue
            found = _find_key(data, "num_train_timesteps")
            if isinstance(found, int):
                return found
        return None

    def _ddim_timesteps(self, ddim_steps: Any, start: Any) -> tuple[int, ...] | None:
        if not isinstance(ddim_steps, int) or not isinstance(start, int) or self.num_train_timesteps is None:
            return None
        from ..diffusion.schedule import ddim_timesteps

        try:
            return tuple(ddim_timesteps(self.num_train_timesteps, ddim_steps, start))
        except Exception:  # noqa: BLE001 - an inconsistent record: say nothing rather than guess
            return None

    # ------------------------------------------------------------------ trained models
    def training_sets(self, model: str) -> list[dict[str, Any]]:
        """The ``models/<model>/fold<k>/training_set.json`` of each fold (what each fold trained on)."""
        cache = self.__dict__.setdefault("_training_sets", {})
        if model not in cache:
            out = []
            folder = self.root / "models" / model
            for path in sorted(folder.glob("fold*/training_set.json")) if folder.is_dir() else []:
                try:
                    data = read_json(path)
                except ValueError:
                    log.warning("%s: unreadable training set, left out", path)
                    continue
                if isinstance(data, dict) and isinstance(data.get("train"), list):
                    out.append(data)
            cache[model] = out
        return cache[model]

    def train_sizes(self, model: str) -> list[int]:
        """Volumes each fold of ``model`` trained on (empty when no training_set.json was written)."""
        return [len(d["train"]) for d in self.training_sets(model)]

    def training_history(self, model: str, fold: int = 0) -> dict[str, list[tuple[int, float]]] | None:
        """Per-epoch training loss and validation Dice of one fold from its CSV log
        (``models/<model>/fold<k>/logs/metrics.csv``), as the training's curves.png draws them."""
        path = self.layout.model_dir(model, fold) / "logs" / "metrics.csv"
        if not path.is_file():
            return None
        import pandas as pd

        try:
            table = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            return None
        if "epoch" not in table:
            return None
        out: dict[str, list[tuple[int, float]]] = {}
        for key, column in (("train_loss", "train_loss_epoch"), ("val_dice", "val_dice")):
            out[key] = []
            if column in table.columns:
                rows = table[["epoch", column]].dropna().groupby("epoch")[column].last()
                out[key] = [(int(e), float(v)) for e, v in rows.items()]
        return out

    # ------------------------------------------------------------------ bank, splits
    @functools.cached_property
    def bank(self) -> dict[str, Any] | None:
        path = self.layout.bank / "bank.json"
        if not path.is_file():
            return None
        try:
            data = read_json(path)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    @functools.cached_property
    def splits(self) -> dict[str, Any] | None:
        if not self.layout.splits.is_file():
            return None
        try:
            data = read_json(self.layout.splits)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------------ variability
    @functools.cached_property
    def variability_stored(self) -> "VariabilityResult | None":
        """Table 1's inputs as written by the variability stage (``variability/*.csv``)."""
        folder = self.layout.variability
        pairs = folder / "variability_pairs.csv"
        if not pairs.is_file():
            return None
        import pandas as pd

        from ..evaluation.variability import VariabilityResult

        def read(name: str) -> pd.DataFrame:
            path = folder / name
            try:
                return pd.read_csv(path) if path.is_file() else pd.DataFrame()
            except pd.errors.EmptyDataError:
                return pd.DataFrame()

        return VariabilityResult(read("variability_pairs.csv"), read("variability_cases.csv"), read("staple.csv"))

    def variability_model(self) -> str | None:
        """The model whose predictions the stored variability study compared with the operators."""
        path = self.layout.variability / "variability.json"
        if path.is_file():
            try:
                data = read_json(path)
            except ValueError:
                data = {}
            if isinstance(data, dict) and isinstance(data.get("model"), str):
                return data["model"]
        if isinstance(self.config.get("variability_model"), str):  # metsynth.experiment.ExperimentConfig
            return self.config["variability_model"]
        section = self.config.get("variability")
        if isinstance(section, dict) and isinstance(section.get("model"), str):
            return section["model"]
        return None

    def has_operator_annotations(self) -> bool:
        if self.cohort is None:
            return False
        levels = {"novice", "expert"}
        return any(len([a for a in c.lesion_masks if a.expertise in levels]) >= 2 for c in self.cohort.cases)

    def automatic_model(self) -> str | None:
        """The model to compare with the operators when the report computes Table 1 itself: the
        paper's (Diffusion+FT), else the evaluated model with the best mean Dice, with predictions."""
        have = [m for m in self.evaluated if self.layout.predictions(m).is_dir()]
        if "harmonized_ft" in have:
            return "harmonized_ft"
        best = self.best_model(have)
        return best

    def best_model(self, models: list[str] | None = None) -> str | None:
        """The model with the highest mean Dice among ``models`` (default: the evaluated ones)."""
        if self.results is None:
            return None
        models = models if models is not None else self.evaluated
        means = self.results[self.results["model"].isin(models)].groupby("model")["dice"].mean()
        means = means[[not math.isnan(v) for v in means.to_numpy()]]
        if means.empty:
            return None
        order = {m: i for i, m in enumerate(models)}
        return sorted(means.index, key=lambda m: (-means[m], order.get(m, 0)))[0]


def _find_key(data: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in nested dicts/lists (None when absent)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        items = list(data.values())
    elif isinstance(data, list):
        items = data
    else:
        return None
    for item in items:
        found = _find_key(item, key)
        if found is not None:
            return found
    return None
