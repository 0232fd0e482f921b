"""Distributed data parallel on CPU: `metsynth train --strategy ddp --devices 2` (gloo, two processes)
trains a U-Net to the end and writes its result (issue 14 item 4)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch


def test_unet_trains_with_ddp_on_two_cpu_processes(tmp_path, builders):
    manifest = builders.write_prepared_cohort(tmp_path / "cohort", n_metastatic=2, n_healthy=1)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "metsynth.cli", "-q", "train", str(manifest), "--out", str(out), "--preset", "tiny",
           "--max-epochs", "1", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["epochs"] == 1 and result["steps"] >= 1
    assert torch.load(out / "model.pt", map_location="cpu", weights_only=True)
