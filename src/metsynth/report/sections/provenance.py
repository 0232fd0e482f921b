"""Section 7: the run's configuration and its provenance (versions, digests, stage markers,
checkpoints).
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from ... import __version__
from ..page import HASH_PREFIX, Section, data_table, esc, not_run, short_hash
from .parts import _code, _rel, _subpart

if TYPE_CHECKING:
    from ..data import RunData


def config_section(run: "RunData") -> Section:
    parts = [_subpart("Configuration (config.yaml)", _config, run), _subpart("Provenance", _provenance, run)]
    return Section("config", "Configuration and provenance", "\n".join(parts), run.config_text is not None)


def _config(run: "RunData") -> str:
    if run.config_text is None:
        return not_run("no <code>config.yaml</code> in the run directory.")
    return f"<pre>{esc(run.config_text.rstrip())}</pre>"


def _provenance(run: "RunData") -> str:
    from importlib import metadata

    versions = [("metsynth (this report)", __version__), ("Python", platform.python_version())]
    for pkg in ("numpy", "scipy", "SimpleITK", "torch", "monai", "lightning", "matplotlib", "pandas"):
        try:
            versions.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            continue
    recorded = []
    if run.bank is not None:
        recorded.append(("lesion bank", run.bank.get("metsynth_version"), run.bank.get("cohort_digest")))
    syn_cfg = run.layout.synthetic / "config.yaml"
    if syn_cfg.is_file():
        data = _yaml_mapping(syn_cfg)
        recorded.append(("synthetic set", data.get("metsynth_version"), data.get("cohort_digest")))
    html = data_table([k for k, _ in versions], [[v for _, v in versions]], left=0,
                      caption="Software (the environment that wrote this report)")
    if recorded:
        html += data_table(["output", "metsynth version", "cohort digest"],
                           [[a, b or "-", c or "-"] for a, b, c in recorded], caption="Versions recorded by the stages")
    html += _trained_on(run)
    if run.cohort_path is not None:
        digest = hashlib.sha256(run.cohort_path.read_bytes()).hexdigest()[:16]
        html += (f'<p class="note">Cohort manifest {_code(_rel(run, run.cohort_path))}, sha256 prefix '
                 f"{_code(digest)}.</p>")
    if run.markers:
        rows = [[m["stage"], _code(str(m.get("fingerprint", "-"))),
                 ", ".join(f"{esc(k)} {_code(str(v))}" for k, v in (m.get("inputs") or {}).items()) or "-"]
                for m in run.markers]
        html += data_table(["stage", "fingerprint (its config + inputs)", "inputs (their fingerprints)"], rows,
                           caption="Stage markers (stages/*.json)", raw=True)
    cks = run.checkpoints()
    if cks:
        html += data_table(["DDPM checkpoint", "sha256 prefix", "volumes", "start timestep", "DDIM steps run",
                            "DDIM timesteps", "DDIM steps requested"],
                           [[_rel(run, Path(c["checkpoint"])) if c["checkpoint"] else "-", short_hash(c["sha256"]),
                             c["volumes"], _or_dash(c["start_timestep"]),
                             len(c["timesteps"]) if c.get("timesteps") else "-",
                             ", ".join(str(t) for t in c["timesteps"]) if c.get("timesteps") else "-",
                             _or_dash(c["ddim_steps"])] for c in cks],
                           caption="Checkpoints named in the harmonized sidecars")
        html += (f'<p class="tablenote">sha256 prefix: the first {HASH_PREFIX} hex digits of the checkpoint\'s '
                 "sha256 (in full in the sidecars). DDIM steps requested: the size of the DDIM grid over the full "
                 "schedule (its stride: T / steps); only the grid points at or below the start timestep run, the "
                 "sidecars' <code>timesteps</code>.</p>")
    return html


def _trained_on(run: "RunData") -> str:
    """Where the run's networks were trained (``trained.environment`` of the DDPM's model.yaml, the
    ``environment`` of each U-Net training's result.json), one row per distinct machine setting."""
    import json

    from ...fileio import read_json
    from ...layout import display_name

    found: list[tuple[str, dict]] = []
    trained = _yaml_mapping(run.layout.diffusion / "model.yaml").get("trained")
    env = trained.get("environment") if isinstance(trained, dict) else None
    if isinstance(env, dict):
        found.append(("DDPM", env))
    models = run.root / "models"
    for path in sorted(models.glob("*/fold*/result.json")) if models.is_dir() else []:
        model = path.parent.parent.name
        if not run.shown(model):
            continue
        try:
            env = read_json(path).get("environment")
        except (ValueError, AttributeError):
            continue
        if isinstance(env, dict):
            found.append((f"size study {display_name(model)}" if model.startswith("size_") else display_name(model),
                          env))
    if not found:
        return ""
    groups: dict[str, tuple[dict, dict[str, int]]] = {}
    for name, env in found:
        _, names = groups.setdefault(json.dumps(env, sort_keys=True), (env, {}))
        names[name] = names.get(name, 0) + 1
    rows = []
    for env, names in groups.values():
        nets = ", ".join(f"{n} ({k} trainings)" if k > 1 else n for n, k in names.items())
        device = str(env.get("device", "-")) + (f" ({env['gpu']}, CUDA {env.get('cuda')})" if env.get("gpu") else "")
        rows.append([nets, env.get("torch", "-"), f"{env.get('cpu', '-')} ({env.get('machine', '-')})",
                     env.get("cpu_capability", "-"), env.get("torch_threads", "-"), device,
                     env.get("world_size", "-"), env.get("precision", "-"),
                     ", ".join(f"{k}={v}" for k, v in (env.get("env") or {}).items()) or "-"])
    html = data_table(["networks", "torch", "CPU", "instruction set", "threads", "device", "processes", "precision",
                       "set in the environment"], rows, left=1, caption="Where the networks were trained")
    return html + ('<p class="tablenote">The same seeds give the same weights, to the last bit, only on the same '
                   "kind of machine: torch's kernels take other paths on another instruction set, thread count or "
                   "GPU, and the last bits that differ grow over a training. Compare a run's numbers with another "
                   "machine's as ranges over seeds, not digit for digit.</p>")


def _yaml_mapping(path: Path) -> dict:
    """A YAML file's top-level mapping; empty when the file is missing, unreadable or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _or_dash(value: object) -> object:
    return "-" if value is None or value == "" else value
