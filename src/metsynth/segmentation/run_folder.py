"""A U-Net training's folder (:class:`metsynth.outdir.OutputFolder`): what records it, what makes
it another training, and what a claimed folder gets before the training starts."""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoints import check_resume_checkpoint
from ..fileio import file_sha256, files_stamp, read_json, write_json
from ..outdir import OutputFolder, differences
from .network import build_network
from .presets import SegmentationConfig, segmentation_config
from .training_set import TrainingSet

# settings a run may change and still resume (where and how fast it runs; how long it trains)
RESUMABLE_CHANGES = ("trainer", "num_workers", "cache_dir", "max_epochs", "max_steps")


def training_folder(out: str | os.PathLike) -> OutputFolder:
    """A U-Net training's folder: ``config.yaml`` records it, ``result.json`` says it is finished
    (its unpacked-volume ``cache`` is kept when another training replaces it)."""
    return OutputFolder(Path(out), "a segmentation training", "config.yaml",
                        outputs=("model.pt", "model.yaml", "timing.json", "curves.png", "checkpoints", "logs"),
                        finished_marker="result.json", ignore=("cache",))


def training_started(out: str | os.PathLike) -> bool:
    """Whether the folder holds anything a training's fit writes (checkpoints, logs, curves, model,
    result). A folder with only config.yaml, training_set.json, init.json and cache/ holds a
    training that stopped before its first step (e.g. on unusable volumes, by an earlier version):
    a training of other settings may take it over, as it would an empty folder."""
    folder = training_folder(out)
    for name in (*folder.outputs, folder.finished_marker):
        path = folder.path / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return True
    return False


def _bank_stamp(training_set: TrainingSet) -> str | None:
    """The on-the-fly synthesis' lesion bank as it is on disk (its ``bank.json``), None without one."""
    bank = (training_set.online or {}).get("bank")
    return files_stamp([Path(bank) / "bank.json"]) if bank else None


def _online_recipe(training_set: TrainingSet) -> dict:
    """What an online training's synthesis draws from, comparable across versions: the synthesis
    settings with every default filled in (a record written before a setting existed, or a partial
    ``--synthesis`` file, reads as the same settings), the donor and healthy cases; not the manifest
    and bank paths (a moved run keeps its models)."""
    from ..errors import ConfigError
    from ..synthesis.compose import SynthesisConfig

    online = dict(training_set.online or {})
    if "synthesis" in online:
        try:
            online["synthesis"] = SynthesisConfig.from_dict(online["synthesis"] or {}).model_dump(mode="json")
        except ConfigError:  # settings this version does not know: compared as written
            pass
    return {k: v for k, v in online.items() if k not in ("manifest", "bank")}


def training_changes(out: str | os.PathLike, config: SegmentationConfig, training_set: TrainingSet,
                     init: str | os.PathLike | None = None) -> list[str]:
    """How the training recorded in ``out`` differs from this one: settings (changes in
    ``RESUMABLE_CHANGES`` do not count), initial weights or training set. Same names are not
    enough: training files or initial weights rewritten since (an earlier stage of a study that ran
    again with other settings) make it another training too. Empty: the same training, or one that never
    started (:func:`training_started`)."""
    out = Path(out)
    if not training_started(out):  # config.yaml, but the fit never began (its inputs were refused): no training
        return []
    previous = segmentation_config(None, out / "config.yaml")
    a = {k: v for k, v in previous.model_dump().items() if k not in RESUMABLE_CHANGES}
    b = {k: v for k, v in config.model_dump().items() if k not in RESUMABLE_CHANGES}
    changes = differences(a, b)
    if changes:
        return changes
    init_file = out / "init.json"
    inputs = read_json(init_file) if init_file.exists() else {}
    previous_init = inputs.get("init")
    if previous_init != (str(init) if init else None):
        return [f"started from {previous_init or 'random weights'}, not {init or 'random weights'}"]
    set_file = out / "training_set.json"
    if set_file.exists():
        old = TrainingSet.load(set_file)
        if [v.key for v in old.train] != [v.key for v in training_set.train] or old.sources != training_set.sources:
            return [f"another training set (sources {','.join(old.sources)}, {len(old.train)} volumes)"]
        # the on-the-fly synthesis: its settings and cases (not where the manifest and bank are: a moved run)
        online = differences(_online_recipe(old), _online_recipe(training_set))
        if online:
            return [f"on-the-fly synthesis: {change}" for change in online]
    if inputs.get("files") is not None and inputs["files"] != training_set.files_stamp():
        return ["the files of its training set were rewritten since it was trained"]
    # a record made before the bank was stamped (or while its bank.json was missing) has no stamp to
    # compare: the training is taken as it is, and the next claim records the bank as it is then
    if inputs.get("bank") is not None and inputs["bank"] != _bank_stamp(training_set):
        return ["the lesion bank of its on-the-fly synthesis was rewritten since it was trained"]
    if inputs.get("init_sha256") is not None and init and Path(init).is_file() \
            and inputs["init_sha256"] != file_sha256(init, 16):
        return [f"its initial weights {init} were rewritten since it was trained"]
    return []


def claim_run_dir(out: Path, config: SegmentationConfig, training_set: TrainingSet, init, *,
                   resume: bool, resume_from: Path | None = None) -> None:
    """Save config.yaml, training_set.json and init.json in a claimed folder (:func:`training_folder`);
    first check the checkpoint to resume from, if any (a checkpoint that cannot be resumed is
    refused before anything is written)."""
    if resume_from is not None:
        import torch

        with torch.random.fork_rng(devices=[]):  # the network's shapes only; the global RNG stays as it is
            net = build_network(config)
        check_resume_checkpoint(resume_from, {f"net.{k}": v.shape for k, v in net.state_dict().items()},
                                optimizer_params=len(list(net.parameters())), run=out)
    if not resume and not training_folder(out).finished():  # starting over: no stale checkpoints or logs
        for ckpt in (out / "checkpoints").glob("*.ckpt"):
            ckpt.unlink()
        for part in (out / "logs").glob("metrics*.csv"):
            part.unlink()
    config.to_yaml(out / "config.yaml")
    training_set.save(out / "training_set.json")
    # what the training starts from, to tell a rerun of the same training from one on rewritten inputs
    write_json(out / "init.json", {"init": str(init) if init else None,
                                   "init_sha256": file_sha256(init, 16) if init else None,
                                   "files": training_set.files_stamp(),
                                   **({"bank": _bank_stamp(training_set)} if training_set.online else {})})
