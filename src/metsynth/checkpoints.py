"""Lightning checkpoints a training resumes from, checked before anything of the run is written
(the U-Net's and the DDPM's trainings both use :func:`check_resume_checkpoint`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import InputError


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


__all__ = ["check_resume_checkpoint"]
