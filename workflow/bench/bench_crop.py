"""Cropping speed: crops per second from DICOM, and total cropping time over bare pixel decoding
time on the same files (goal: <= 1.3x). Both are measured side by side, alternating, in one run.

    python workflow/bench/bench_crop.py                    # on a generated phantom cohort
    python workflow/bench/bench_crop.py --source DIR       # on a DICOM tree with metadata/ CSVs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402

from mammodp.data import lesions
from mammodp.data.crops import CropSpec, make_crops
from mammodp.data.phantom import PhantomSpec, generate


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", help="folder with metadata/ and CBIS-DDSM/ (default: a phantom)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--patients", type=int, default=12)
    p.add_argument("--height", type=int, default=4000, help="phantom mammogram size: real")
    p.add_argument("--width", type=int, default=2600, help="CBIS-DDSM scans are ~4000 x 2600")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Path(a.source) if a.source else tmp / "phantom"
        if not a.source:
            spec = PhantomSpec(
                seed=1,
                patients_train=a.patients,
                patients_test=2,
                patients_external=0,
                height=a.height,
                width=a.width,
            )
            generate(source, spec)
        meta = source / "metadata"
        table = lesions.drop_duplicates(
            lesions.cbis_lesions(
                {
                    "train": meta / "mass_case_description_train_set.csv",
                    "test": meta / "mass_case_description_test_set.csv",
                },
                source / "CBIS-DDSM",
            )
        )
        from mammodp.data.crops import resolve_images

        images = sorted(map(str, resolve_images(table["image"], source / "CBIS-DDSM").values()))
        decode, crop = [], []
        for k in range(a.repeats):  # alternate, so both see the same machine state
            t = time.perf_counter()
            for path in images:
                pydicom.dcmread(path).pixel_array  # noqa: B018
            decode.append(time.perf_counter() - t)
            t = time.perf_counter()
            make_crops(
                table, tmp / f"crops{k}", CropSpec(), workers=1, dicom_root=source / "CBIS-DDSM"
            )
            crop.append(time.perf_counter() - t)
    d, c = statistics.median(decode), statistics.median(crop)
    result = {
        "images": len(images),
        "crops": len(table),
        "crops_per_s": len(table) / c,
        "crop_over_decode": c / d,
    }
    print(f"{len(images)} mammograms, {len(table)} crops, 1 worker, median of {a.repeats}")
    print(f"  bare decode   {d:7.3f} s")
    print(f"  full cropping {c:7.3f} s  ({result['crops_per_s']:.1f} crops/s)")
    print(f"  ratio crop / decode = {result['crop_over_decode']:.2f}x (goal <= 1.3x)")
    return result


if __name__ == "__main__":
    main()
