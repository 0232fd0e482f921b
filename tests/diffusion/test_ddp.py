"""Distributed data parallel on CPU: `metsynth diffusion train --strategy ddp --devices 2` (gloo, two
processes) trains and exports weights that load (issue 14 item 4)."""

from __future__ import annotations

import subprocess
import sys

import torch


def test_ddpm_trains_with_ddp_on_two_cpu_processes(tmp_path, prepared_cohort):
    out = tmp_path / "ddpm"
    cmd = [sys.executable, "-m", "metsynth.cli", "-q", "diffusion", "train", str(prepared_cohort), "--out", str(out),
           "--preset", "tiny", "--max-steps", "2", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 steps" in proc.stdout
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert state
