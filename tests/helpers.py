"""Builders of small test volumes and cohorts (importable as `helpers` from any test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from metsynth.volume import Volume


def make_volume(shape=(24, 28, 32), spacing=(1.0, 0.8, 0.8), origin=(5.0, -10.0, 20.0), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    hu = rng.normal(40, 20, size=shape).astype(np.int16)
    zz, yy, xx = np.indices(shape)
    c = np.array(shape) / 2
    bone = ((yy - c[1]) ** 2 + (xx - c[2]) ** 2) < (min(shape[1:]) / 3) ** 2
    hu[bone] = 800
    return Volume(hu, spacing, origin)


def write_tiny_cohort(root: Path, n_healthy=1, n_metastatic=2, **overrides) -> Path:
    """A small valid cohort (images, femur masks, lesion masks) and its manifest; returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n_healthy + n_metastatic):
        cid = f"{'H' if i < n_healthy else 'M'}{i:02d}"
        img = make_volume(seed=i)
        img.write(root / "images" / f"{cid}.nii.gz")
        femur = (img.array > 500).astype(np.uint8)
        img.with_array(femur).write(root / "femur" / f"{cid}.nii.gz")
        case = {"id": cid, "image": f"images/{cid}.nii.gz", "femur_mask": f"femur/{cid}.nii.gz",
                "role": "healthy" if i < n_healthy else "metastatic", "centre": "A"}
        if i >= n_healthy:
            lesion = np.zeros(img.shape, np.uint8)
            lesion[10:14, 12:16, 14:18] = 1
            img.with_array(lesion).write(root / "lesions" / f"{cid}.nii.gz")
            case["lesion_masks"] = [{"path": f"lesions/{cid}.nii.gz"}]
        cases.append(case)
    data = {"name": "tiny", "cases": cases}
    data.update(overrides)
    manifest = root / "cohort.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    return manifest


def written_again(path) -> None:
    """Move a file's modification time one second on, as if a step had written it again."""
    import os

    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def fill_disk_at(monkeypatch, nth: int) -> list:
    """Make the ``nth`` gzip write of a volume run out of disk partway (a third of its bytes on
    disk, then ENOSPC); returns the list of files written so far (the calls)."""
    import errno

    from metsynth import volume as volume_module

    real = volume_module._gzip_file
    calls: list = []

    def fills_up(src, dst, level):
        calls.append(dst)
        real(src, dst, level)
        if len(calls) >= nth:
            data = dst.read_bytes()
            dst.write_bytes(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(volume_module, "_gzip_file", fills_up)
    return calls


def kept_rows(run: Path) -> list[dict[str, str]]:
    """The kept rows of a synthesis run's ``index.csv``."""
    import csv

    with open(Path(run) / "index.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["kept"] == "true"]

