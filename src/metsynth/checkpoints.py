"""Model files, one format for both networks, and the Lightning checkpoints a training resumes from.

* ``model.pt``: ``{"format": "metsynth-model/2", "network": "unet" | "ddpm", "state_dict": ...,
  "meta": ...}``, tensors and plain data only (``torch.load(weights_only=True)``), written by
  :func:`save_model` with ``model.yaml`` beside it (the same ``meta``, for people and for
  tools that only want the settings). :func:`load_model` reads it, and still reads the two
  formats before it (a U-Net ``metsynth-unet/1`` dict; a DDPM's bare state_dict with its
  ``model.yaml``) and a training's Lightning ``.ckpt`` (each network says how to unpack one).
  A model of the other network is refused in one line that names the command to use.
* :func:`check_resume_checkpoint`: a ``last.ckpt`` checked before anything of the run is written
  (the U-Net's and the DDPM's trainings both call it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import InputError

MODEL_FORMAT = "metsynth-model/2"
LEGACY_FORMATS = {"unet": "metsynth-unet/1", "ddpm": "metsynth-ddpm/1"}
NETWORKS = {"unet": ("segmentation model", "`metsynth train`", "`metsynth predict` or `train --init`"),
            "ddpm": ("DDPM", "`metsynth diffusion train`", "`metsynth harmonize --checkpoint`")}
ARCHITECTURES = {"unet": "3D U-Net", "ddpm": "denoising diffusion model"}


def save_model(path: str | os.PathLike, network: str, state_dict: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` (weights and ``meta``, plain data) and ``model.yaml`` (``meta``), atomically."""
    import yaml

    from .fileio import save_torch, write_text

    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    path = Path(path)
    header = {"format": MODEL_FORMAT, "network": network}
    # in the usual layout whatever memory format the network ran in (metsynth.devices.to_memory_format)
    state_dict = {k: v.contiguous() if hasattr(v, "contiguous") else v for k, v in state_dict.items()}
    save_torch(path, {**header, "state_dict": state_dict, "meta": meta})
    described = {**header, **{k: v for k, v in meta.items() if k not in header}}
    write_text(path.with_suffix(".yaml"), yaml.safe_dump(described, sort_keys=False))
    return path


USAGE = {"unet": "metsynth predict MODEL INPUTS... -o OUT", "ddpm": "metsynth harmonize SET --checkpoint MODEL -o OUT"}


def _not_a_checkpoint(path: Path) -> str | None:
    """What ``path`` looks like when it is plainly no model file (a YAML manifest, an image, text),
    from its name and first bytes; None when it may be one (a zip archive or a pickle)."""
    name = path.name.lower()
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip archive, or a legacy pickle
        return None
    if name.endswith((".yaml", ".yml")) or name == "cohort.yaml":
        return "a cohort manifest" if b"cases:" in head or name == "cohort.yaml" else "a YAML settings file"
    if name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")) or head[128:132] == b"DICM" \
            or head[344:348] in (b"n+1\0", b"ni1\0"):
        return "an image"
    if head[:2] == b"\x1f\x8b":
        return "a gzip file (an image?)"
    if name.endswith((".json", ".csv", ".txt", ".md")):
        return f"a {name.rsplit('.', 1)[-1].upper()} file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.strip() and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a cohort manifest" if "cases:" in text else "a text file"
    return None


def wrong_network(path: str | os.PathLike, found: Any, network: str) -> InputError:
    """The one-line error for a model file of another network than ``network`` (``found``: the
    ``network`` its header or model.yaml names), saying which command made it and which one to use."""
    what, made_by, used_by = NETWORKS[network]
    other = NETWORKS.get(str(found), (str(found), "", "another command"))
    origin = f" (it is the {ARCHITECTURES.get(str(found), 'network')} of {other[1]})" if other[1] else ""
    return InputError(f"{path}: a {other[0]}, not a {what}{origin}; give it to {other[2]}, and give {used_by} "
                      f"the model.pt of {made_by}")


def load_model(path: str | os.PathLike, network: str, *,
               from_lightning: Any = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``(state_dict, meta, file)`` of a model of ``network`` (a ``model.pt``, its folder, or a
    Lightning ``.ckpt``: ``from_lightning(checkpoint) -> (state_dict, meta)``), loaded with
    ``torch.load(weights_only=True)``; anything else is a one-line :class:`InputError`."""
    import torch

    what, made_by, used_by = NETWORKS[network]
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; give the model.pt written by {made_by} (or its folder, or a "
                         "Lightning .ckpt of its checkpoints/ folder)")
    kind = _not_a_checkpoint(path)
    if kind is not None:  # e.g. `metsynth predict cohort.yaml model.pt`: the arguments swapped
        raise InputError(f"{path} is not a model checkpoint (it looks like {kind}); usage: {USAGE[network]} "
                         f"(the model.pt written by {made_by}, or its folder)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, garbage or foreign: the file's fault
        first = next((x.strip() for x in str(err).splitlines() if x.strip()), type(err).__name__)
        if "weights_only" in first or "weights only" in first.lower():  # torch's advice to unpickle anything: not ours
            first = "it holds Python objects other than weights and plain data, which metsynth never loads"
        raise InputError(f"{path}: cannot be read as a metsynth {what} with torch.load(weights_only=True) "
                         f"({type(err).__name__}: {first[:200]}); "
                         f"use the model.pt written by {made_by}") from None
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        if obj.get("network") != network:
            raise wrong_network(path, obj.get("network"), network)
        return obj["state_dict"], obj["meta"], path
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:  # Lightning checkpoint
        if from_lightning is None:
            raise InputError(f"{path}: a Lightning checkpoint; give the exported model.pt of {made_by}")
        try:
            state, meta = from_lightning(obj)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None
        return state, meta, path
    if isinstance(obj, dict) and obj.get("format") in LEGACY_FORMATS.values():  # metsynth-unet/1
        if obj["format"] != LEGACY_FORMATS[network]:
            raise InputError(f"{path}: a model of format {obj['format']}, not a {what}; give {used_by} the "
                             f"model.pt of {made_by}")
        return obj["state_dict"], obj["meta"], path
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        # metsynth-ddpm/1: a bare state_dict, its settings in model.yaml beside it
        from .config import read_yaml

        yaml_path = path.with_suffix(".yaml")
        info = read_yaml(yaml_path, error=InputError) if yaml_path.is_file() else None
        if network == "ddpm" and info is not None and "config" in info:
            return obj, {k: v for k, v in info.items() if k != "format"}, path
        if network == "ddpm":
            raise InputError(f"{path}: bare weights without their settings ({yaml_path.name} missing or not a "
                             f"metsynth model description); keep model.pt and model.yaml together, as {made_by} "
                             "writes them")
    raise InputError(f"{path}: not a metsynth {what} (expected the model.pt written by {made_by})")


def check_resume_checkpoint(path: str | os.PathLike, state_shapes: dict[str, Any], *, optimizer_params: int,
                            callbacks: tuple[str, ...] = (), run: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check that the Lightning checkpoint ``path`` can resume a training, before anything of the
    run is written: it loads with ``torch.load(weights_only=True)``, holds what Lightning restores
    (weights, epoch and step, loop state, one optimizer and its scheduler, callback states,
    ``callbacks``' among them) and its weights fit the model (``state_shapes``: every key of the
    module's state_dict with its shape; ``optimizer_params``: the parameters the optimizer steps).

    Raises a one-line :class:`InputError` naming the file and the fix (delete it to start over,
    or copy another checkpoint of its folder over it); returns the loaded checkpoint.
    """
    import torch

    path = Path(path)

    def refuse(reason: str) -> InputError:
        reason = " ".join(reason.split())  # one line
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)
        alternative = (f", or copy another checkpoint of {path.parent} ({', '.join(others)}) over it to resume from "
                       "there" if others else "")
        unchanged = f"; nothing in {run} was changed" if run is not None else ""
        return InputError(f"{path}: cannot resume from this checkpoint ({reason}){unchanged}; delete it to start "
                          f"the training over{alternative}")

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, garbage or foreign: the file's fault
        import zipfile

        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, its directory at the end
            raise refuse("damaged or truncated: not the zip archive torch.save writes") from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        line = next((x for x in lines if "Unsupported global" in x), lines[0] if lines else "")
        raise refuse(f"unreadable with torch.load(weights_only=True): {type(err).__name__}: {line}") from None
    if not isinstance(ckpt, dict):
        raise refuse(f"not a Lightning checkpoint: it holds a {type(ckpt).__name__}")
    needed = {"state_dict": dict, "epoch": int, "global_step": int, "loops": dict, "optimizer_states": list,
              "lr_schedulers": list, "callbacks": dict}
    missing = [k for k, kind in needed.items() if not isinstance(ckpt.get(k), kind)]
    if missing:
        raise refuse(f"not a full Lightning training checkpoint: no {', '.join(missing)}"
                     + (" (a model.pt or a weights-only checkpoint?)" if "state_dict" not in missing else ""))
    if not isinstance(ckpt["loops"].get("fit_loop"), dict):
        raise refuse("no training-loop state (loops.fit_loop)")
    absent = [c for c in callbacks if c not in ckpt["callbacks"]]
    if absent:
        raise refuse(f"no state of the callback(s) {', '.join(absent)}")
    state = ckpt["state_dict"]
    lacking = [k for k in state_shapes if k not in state]
    extra = [k for k in state if k not in state_shapes]
    if lacking or extra:
        detail = "; ".join(filter(None, [f"missing {', '.join(lacking[:3])}" if lacking else "",
                                         f"unexpected {', '.join(extra[:3])}" if extra else ""]))
        raise refuse(f"its weights are not of this model: {detail}")
    for key, shape in state_shapes.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise refuse(f"its weights do not fit this model: {key} is {got}, the model's {tuple(shape)}")
    optim = ckpt["optimizer_states"]
    groups = optim[0].get("param_groups") if len(optim) == 1 and isinstance(optim[0], dict) else None
    if not isinstance(groups, list) or sum(len(g.get("params", ())) for g in groups) != optimizer_params \
            or len(ckpt["lr_schedulers"]) != 1:
        raise refuse("its optimizer or learning-rate schedule state is not of this model")
    return ckpt


__all__ = ["MODEL_FORMAT", "NETWORKS", "check_resume_checkpoint", "load_model", "save_model"]
