"""Time and size of Volume.write for raw NIfTI and gzip levels 1 and 6 on a default phantom case.

Run: .venv/bin/python benchmarks/bench_volume_io.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from metsynth.phantom import PhantomConfig, generate_case
from metsynth.prepare import standardize


def main() -> None:
    case = generate_case("M001", "metastatic", 0, PhantomConfig())
    volumes = {
        "float32 standardized image": case.image.with_array(standardize(case.image.array, (-1000, 2000))),
        "int16 HU image": case.image,
        "uint8 mask": case.lesion,
    }
    with tempfile.TemporaryDirectory() as tmp:
        print("| array | raw .nii | gzip level 1 | gzip level 6 |\n|---|---|---|---|")
        for name, vol in volumes.items():
            cells = []
            for suffix, level in ((".nii", None), (".nii.gz", 1), (".nii.gz", 6)):
                path = Path(tmp) / f"v{level}{suffix}"
                best = min(_timed(vol, path, level) for _ in range(3))
                size = os.path.getsize(path)
                cells.append(f"{best * 1000:.0f} ms, "
                             + (f"{size / 1e6:.1f} MB" if size > 1e6 else f"{size / 1e3:.0f} kB"))
            print(f"| {name} | " + " | ".join(cells) + " |")


def _timed(vol, path, level) -> float:
    start = time.perf_counter()
    vol.write(path, compression_level=level)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
