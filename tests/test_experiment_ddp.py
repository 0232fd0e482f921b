"""A study whose trainings run on several ranks (issue 16 item 1): ``trainer: {strategy: ddp,
devices: 2}`` on CPU (gloo). Lightning's subprocess launcher reruns the command line for rank 1;
rank 0 runs the stages, rank 1 only joins rank 0's trainings (metsynth.devices.StudyRanks)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from metsynth.experiment import ExperimentConfig, experiment_preset
from metsynth.layout import RunLayout


def small_study() -> dict:
    """The tiny study cut to what the DDP question needs: a DDPM that the harmonization reads
    (the crash of the issue), and two models of Table 3 (real, the reference, and harmonized), one
    epoch each, on two folds; no test-only cases, no CNN realism, no size study."""
    data = experiment_preset("tiny").model_dump(mode="json")
    data["cohort"]["phantom"].update(healthy=1, test=0)
    data["synthesis"]["repeats"] = 1
    data["models"] = ["real", "harmonized"]
    data["variability_model"] = "harmonized"
    data["size_study"] = []
    data["sweep"]["timesteps"] = [0]
    data["realism"]["cnn"] = False
    data["diffusion"]["overrides"]["train"]["max_steps"] = 2
    data["segmentation"]["overrides"].update(max_epochs=1, val_cases=0)
    data["parallel"]["trainings"] = 1
    data["preview"] = 0
    return data


def start_run(config: Path, run_dir: Path, *extra: str, quiet: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metsynth.cli", *(["-q"] if quiet else []), "experiment", "run", str(config),
           "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"timed out:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


def digests(root: Path, *folders: str) -> dict[str, str]:
    """sha256 of the volumes and tables under ``folders`` (the JSON/YAML records name the run folder)."""
    files = [p for f in folders for p in sorted((root / f).rglob("*")) if p.suffix in (".gz", ".csv", ".npy")]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_tiny_study_on_two_ddp_ranks_gives_the_table3_of_one_process(tmp_path):
    data = small_study()
    one_config, ddp_config = tmp_path / "one.yaml", tmp_path / "ddp.yaml"
    ExperimentConfig.from_dict(data).to_yaml(one_config)
    data["trainer"].update(accelerator="cpu", devices=2, strategy="ddp")
    data["parallel"]["trainings"] = 2  # folds at once: not with DDP (its ranks train one model at a time)
    ExperimentConfig.from_dict(data).to_yaml(ddp_config)
    one, ddp = tmp_path / "one", tmp_path / "ddp"

    started = time.perf_counter()
    runs = [start_run(one_config, one), start_run(ddp_config, ddp)]
    finish(runs[0])
    out = finish(runs[1])
    print(f"one process and two DDP ranks, side by side: {time.perf_counter() - started:.0f} s")

    # the whole study ran, its stages and bookkeeping once, on rank 0 (rank 1 prints no results)
    layout = RunLayout(ddp)
    assert out.count("report       done") == 1 and "error" not in out.lower(), out[-4000:]
    assert (layout.report / "index.html").is_file()
    assert sorted(p.name for p in layout.stages.glob("*.json")) == \
        sorted(p.name for p in RunLayout(one).stages.glob("*.json"))

    # every stage before the first training wrote the same bytes as in one process
    before_training = ("phantom", "prepared", "bank", "synthetic")
    assert digests(ddp, *before_training) == digests(one, *before_training)
    assert (ddp / "splits.json").read_bytes() == (one / "splits.json").read_bytes()

    # each U-Net trained on both ranks: the same epochs, each rank stepping on its half of an epoch's
    # patches (a DDP step takes one batch per rank), so fewer optimizer steps than in one process
    for model in ("real", "harmonized"):
        for fold in (0, 1):
            a = json.loads((RunLayout(one).model_dir(model, fold) / "result.json").read_text())
            b = json.loads((layout.model_dir(model, fold) / "result.json").read_text())
            patches = sum(a["sampling"]["patches_per_epoch"].values())
            batch = yaml.safe_load((layout.model_dir(model, fold) / "config.yaml").read_text())["batch_size"]
            assert b["epochs"] == a["epochs"] == 1
            assert (a["steps"], b["steps"]) == (math.ceil(patches / batch), math.ceil(patches / 2 / batch)), \
                (model, a, b)

    # Table 3: the same models, metrics and cases; the numbers close, not equal. DDP does not promise
    # the one-process models: each rank steps on a batch of its own half of the epoch's patches and
    # DDP averages the ranks' gradients, so where one process takes two steps of a batch the two ranks
    # take one step of two batches (above: 10 patches per epoch, batch 2: 5 steps in one process, 3 on
    # two ranks), and the Dice loss is pooled over one rank's batch, not over both. Even where the steps
    # are the same (the DDPM here: one patch per rank, one step per epoch either way) the averaged
    # gradient is summed in another order, and Adam's first steps magnify such last-bit differences
    # (DDPM weights up to 6e-4 apart). With these one-epoch models the predictions then differ by a few
    # voxels (measured: mean Dice 1e-5, ASSD 0.01 mm apart), far inside the tolerance below.
    table_one = json.loads((RunLayout(one).stats / "table3.json").read_text())
    table = json.loads((layout.stats / "table3.json").read_text())
    key = ["model", "reference", "metric", "n", "n_paired"]
    assert [[p[k] for k in key] for p in table["pairwise"]] == [[p[k] for k in key] for p in table_one["pairwise"]]
    assert [p["metric"] for p in table["pairwise"]] == ["dice", "hd", "hd95", "assd"]
    for p, q in zip(table["pairwise"], table_one["pairwise"]):
        for value in ("mean", "reference_mean"):
            assert math.isclose(p[value], q[value], rel_tol=0.02, abs_tol=0.005), \
                (p["metric"], value, p[value], q[value])

    # longer trainings of the same models: each resumes from its last checkpoint, on both ranks. Rank 0
    # decides it (from the folder as it was before it rewrote the settings there) and hands the decision
    # to rank 1: deciding from the folder itself, rank 1 read the new settings, took the training for
    # finished and left rank 0 alone in the fit (a hang until the process group's 30 min timeout)
    steps = {(m, f): json.loads((layout.model_dir(m, f) / "result.json").read_text())["steps"]
             for m in ("real", "harmonized") for f in (0, 1)}
    data["segmentation"]["overrides"]["max_epochs"] = 2
    ExperimentConfig.from_dict(data).to_yaml(ddp_config)
    out = finish(start_run(ddp_config, ddp, "--only", "train"), timeout=300)
    assert "train        done" in out, out[-4000:]
    for (model, fold), before in steps.items():
        result = json.loads((layout.model_dir(model, fold) / "result.json").read_text())
        assert (result["epochs"], result["steps"]) == (2, 2 * before), (model, fold, result)


# ----------------------------------------------------------------------- rank 0 stops
RANKS_SCRIPT = textwrap.dedent("""
    import os, sys
    from metsynth.devices import StudyRanks, on_rank_zero, trainer_world

    def training(tag):
        import torch.distributed as dist

        value = on_rank_zero(lambda: "rank 0's decision" if os.environ["LOCAL_RANK"] == "0" else "own decision")
        print(f"rank {os.environ['LOCAL_RANK']} in {tag}: {value}", flush=True)
        dist.barrier()  # as a fit: every rank in it

    def failing():
        on_rank_zero(lambda: 1 / 0)

    world = trainer_world("cpu", 2, "ddp")
    ranks = StudyRanks.start(world)
    if world.rank > 0:
        ranks.follow()
        print("rank 1 ended", flush=True)
        sys.exit(0)
    ranks.call(training, "call 0")
    if sys.argv[1] == "crash":
        os._exit(3)  # no clean-up, no word to the other rank (as a kill or a segfault)
    try:
        ranks.call(failing)
    except ZeroDivisionError as err:
        ranks.finish(err)
    sys.exit(1)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["crash", "error"])
def test_a_rank_whose_rank_zero_stops_ends_at_once(tmp_path, how):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "NODE_RANK": "0"}
    procs = [subprocess.Popen([sys.executable, str(script), how], env={**env, "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert "rank 0 in call 0: rank 0's decision" in outs[0], outs
    assert "rank 1 in call 0: rank 0's decision" in outs[1], outs  # rank 1 took rank 0's decision
    if how == "crash":
        assert procs[0].returncode == 3
        assert procs[1].returncode != 0 and "LostRankZero: rank 1: lost contact with rank 0" in outs[1], outs[1]
    else:  # rank 0 reports its error; rank 1 stops its copy of the training and ends without a second report
        assert procs[0].returncode == 1
        assert procs[1].returncode == 0 and "rank 0 ended the study with an error" in outs[1], outs[1]
        assert "ZeroDivisionError" in outs[1] and "rank 1 ended" in outs[1], outs[1]
