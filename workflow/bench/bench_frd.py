"""FRD feature extraction speed: images per second with 1 and 2 workers, side by side in one
run, on the published crops when ../shared/data is there, else on generated images.

    python workflow/bench/bench_frd.py [--images DIR] [--n 120] [--version v0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mammodp import fidelity

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mammo_dp" / "dataset16062024"


def _images(folder: Path | None, n: int, tmp: Path) -> list[str]:
    if folder and folder.is_dir():
        return [str(p) for p in sorted(folder.rglob("*.png"))[:n]]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 255, (128, 128), dtype=np.uint8), (0, 0), 3)
        paths.append(str(tmp / f"{i}.png"))
        cv2.imwrite(paths[-1], img)
    return paths


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=SHARED)
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--version", default="v0")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    from frd_score import frd

    with tempfile.TemporaryDirectory() as tmp:
        paths = _images(a.images, a.n, Path(tmp))
        half = len(paths) // 2
        times = {1: [], 2: []}
        for _ in range(a.repeats):  # alternate worker counts: same machine state for both
            for workers in (1, 2):
                cache = fidelity.FeatureCache()
                t = time.perf_counter()
                fidelity.frd_value(paths[:half], paths[half:], a.version, workers, cache)
                times[workers].append(time.perf_counter() - t)
        del frd
    rate = {w: len(paths) / statistics.median(t) for w, t in times.items()}
    print(f"FRD {a.version} feature extraction, {len(paths)} images, median of {a.repeats}")
    for w in (1, 2):
        print(f"  {w} worker(s): {rate[w]:7.1f} images/s")
    print(f"  speed-up 2 vs 1 workers = {rate[2] / rate[1]:.2f}x")
    return {"images_per_s_1": rate[1], "images_per_s_2": rate[2], "speedup": rate[2] / rate[1]}


if __name__ == "__main__":
    main()
