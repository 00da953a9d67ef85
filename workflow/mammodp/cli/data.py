"""The commands of stage ``data`` (``workflow/rules/data.smk``), each one's arguments
beside its handler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mammodp.errors import UserError
from mammodp.fileio import atomic_path

from .common import named_paths, one_or_list

log = logging.getLogger("mammodp")


def add_phantom(sub) -> None:
    s = sub.add_parser("phantom", help="write the embedded phantom cohort")
    s.add_argument("--spec", required=True, help="JSON: seed, patients_*, height, width")
    s.add_argument("--case-csvs", nargs=4, required=True, help="mass_train=PATH ... (4 keys)")
    s.add_argument("--dicom", required=True, help="the CBIS-DDSM-like DICOM folder to write")
    s.add_argument("--bcdr", required=True, help="the BCDR-like folder to write")
    s.set_defaults(func=cmd_phantom)


def cmd_phantom(a):
    import shutil
    import tempfile

    from mammodp.config import CASE_CSVS
    from mammodp.data.phantom import PhantomSpec, generate

    spec = PhantomSpec(**json.loads(a.spec))
    csvs = named_paths(a.case_csvs, CASE_CSVS, "--case-csvs")
    dicom = Path(a.dicom)
    dicom.parent.mkdir(parents=True, exist_ok=True)
    # Generated whole beside the DICOM folder, then each part moved to the path its rule chose.
    with tempfile.TemporaryDirectory(prefix=".phantom.", dir=dicom.parent) as work:
        cohort = Path(work) / "cohort"
        generate(cohort, spec)
        for key, name in CASE_CSVS.items():
            Path(csvs[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(cohort / "metadata" / name, csvs[key])
        for part, dest in (("CBIS-DDSM", dicom), ("BCDR", Path(a.bcdr))):
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(cohort / part, dest)


def add_tcia_metadata(sub) -> None:
    s = sub.add_parser("tcia-metadata", help="download the CBIS-DDSM case-description CSVs")
    s.add_argument(
        "--urls", required=True, help="JSON: mass_train, mass_test, calc_train, calc_test"
    )
    s.add_argument("--out", nargs=4, required=True, help="mass_train=PATH ... (4 keys)")
    s.set_defaults(func=cmd_tcia_metadata)


def cmd_tcia_metadata(a):
    from mammodp.config import CASE_CSVS
    from mammodp.data.tcia import download_metadata

    download_metadata(json.loads(a.urls), named_paths(a.out, CASE_CSVS, "--out"))


def add_tcia_series(sub) -> None:
    s = sub.add_parser("tcia-series", help="list the series the mass CSVs need, in batches")
    s.add_argument("--api-url", required=True)
    s.add_argument("--collection", default="CBIS-DDSM")
    s.add_argument("--mass-train", required=True)
    s.add_argument("--mass-test", required=True)
    s.add_argument("--max-patients", type=int)
    s.add_argument("--patients", help="comma-separated patient ids (instead of all)")
    s.add_argument("--batch-size", type=int, default=50)
    s.add_argument("--out", required=True)
    s.add_argument("--patients-out", required=True)
    s.set_defaults(func=cmd_tcia_series)


def cmd_tcia_series(a):
    from mammodp.data.tcia import list_series
    from mammodp.fileio import write_csv

    patients = a.patients.split(",") if a.patients else None
    series = list_series(
        a.api_url, a.collection, [a.mass_train, a.mass_test], a.max_patients, patients, a.batch_size
    )
    with atomic_path(a.patients_out) as tmp:
        tmp.write_text("\n".join(series.attrs["patients"]) + "\n")
    write_csv(a.out, series)
    log.info("%d series in %d batches", len(series), series["batch"].nunique())


def add_tcia_batch(sub) -> None:
    s = sub.add_parser("tcia-batch", help="download and verify one batch of series")
    s.add_argument("--api-url", required=True)
    s.add_argument("--series", required=True)
    s.add_argument("--batch", type=int, required=True)
    s.add_argument("--root", required=True, help="the batch's folder (its rule's output)")
    s.add_argument("--out", required=True, help="batch marker, written last")
    s.add_argument("--connections", type=int, default=4, help="batches fetching at once")
    s.set_defaults(func=cmd_tcia_batch)


def cmd_tcia_batch(a):
    from mammodp.data.tcia import download_batch
    from mammodp.fileio import read_csv

    series = read_csv(a.series, required=["series_uid", "image_count", "batch"])
    download_batch(a.api_url, series, a.batch, a.root, a.out, connections=a.connections)


def add_tcia_complete(sub) -> None:
    s = sub.add_parser("tcia-complete", help="check that every series is downloaded")
    s.add_argument("--series", required=True)
    s.add_argument("--batches", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_tcia_complete)


def cmd_tcia_complete(a):
    import pandas as pd

    from mammodp.fileio import read_csv, write_csv

    series = read_csv(a.series, required=["series_uid", "image_count", "batch"])
    done = pd.concat([pd.read_csv(b, sep="\t") for b in a.batches], ignore_index=True)
    missing = sorted(set(series["series_uid"]) - set(done["series_uid"]))
    if missing:
        raise UserError(f"{len(missing)} series are not downloaded yet, e.g. {missing[:3]}")
    write_csv(a.out, done)


def add_lesions(sub) -> None:
    s = sub.add_parser("lesions", help="case-description CSVs + DICOM / BCDR -> lesions.csv")
    s.add_argument("--mass-train")
    s.add_argument("--mass-test")
    s.add_argument("--calc", nargs="*", help="calc CSVs (counted, ignored by design)")
    s.add_argument("--dicom-root", nargs="+", help="the DICOM folder(s) (TCIA: one per batch)")
    s.add_argument("--bcdr", help="BCDR folder (external test set)")
    s.add_argument("--patients-file", help="only these CBIS-DDSM patients (partial download)")
    s.add_argument(
        "--contours",
        choices=["study", "outer"],
        default="study",
        help="mask contours and duplicates: the study's (default) or outer (data.lesions)",
    )
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_lesions)


def cmd_lesions(a):
    import pandas as pd

    from mammodp.data import lesions
    from mammodp.fileio import write_csv

    if bool(a.mass_train) != bool(a.mass_test) or (a.mass_train and not a.dicom_root):
        raise UserError("give --mass-train, --mass-test and --dicom-root together")
    if not a.mass_train and not a.bcdr:
        raise UserError("no inputs: give --mass-train and --mass-test (with --dicom-root), --bcdr")
    frames = []
    if a.mass_train:
        patients = None
        if a.patients_file:
            if not Path(a.patients_file).is_file():
                raise UserError(
                    f"{a.patients_file}: patient list not found; rerun the tcia_series rule "
                    "(snakemake --forcerun tcia_series)."
                )
            patients = set(Path(a.patients_file).read_text().split())
        frames.append(
            lesions.cbis_lesions(
                {"train": a.mass_train, "test": a.mass_test},
                one_or_list(a.dicom_root),
                workers=a.workers,
                patients=patients,
                contours=a.contours,
            )
        )
        n_calc = lesions.count_calc_rows(a.calc or [])
        log.info("ignored %d calcification rows (not masses, by design)", n_calc)
    if a.bcdr:
        frames.append(lesions.bcdr_lesions(a.bcdr, contours=a.contours))
    table = lesions.drop_duplicates(pd.concat(frames, ignore_index=True), contours=a.contours)
    if table.empty:
        raise UserError("no lesions found in the inputs")
    log.info(
        "%d lesions: %s",
        len(table),
        table.groupby(["dataset", "portion", "label"]).size().to_dict(),
    )
    write_csv(a.out, table)


def add_crop(sub) -> None:
    s = sub.add_parser("crop", help="lesions.csv -> 128x128 PNG crops + crop index")
    s.add_argument("--lesions", required=True)
    s.add_argument("--spec", required=True, help="JSON: data.crop (framing, margin, ...)")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--index", required=True)
    s.add_argument("--dicom-root", nargs="+", help="the DICOM folder(s) the lesions refer to")
    s.add_argument("--bcdr", help="the BCDR folder the lesion table refers to")
    s.add_argument(
        "--bcdr-intensity",
        choices=["as_is", "minmax"],
        default="as_is",
        help="BCDR images as read (the study, default) or min-maxed (data.bcdr.intensity)",
    )
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(func=cmd_crop)


def cmd_crop(a):
    from mammodp.data.crops import CropSpec, make_crops
    from mammodp.data.lesions import LESION_COLUMNS
    from mammodp.fileio import read_csv, write_csv

    lesion_table = read_csv(a.lesions, required=LESION_COLUMNS)
    spec = CropSpec(**json.loads(a.spec))
    index = make_crops(
        lesion_table,
        a.out_dir,
        spec,
        workers=a.workers,
        dicom_root=one_or_list(a.dicom_root),
        bcdr_root=a.bcdr,
        bcdr_intensity=a.bcdr_intensity,
    )
    write_csv(a.index, index)
    log.info("%d crops written to %s", len(index), a.out_dir)


def add_import_processed(sub) -> None:
    s = sub.add_parser("import-processed", help="the study's published crops -> crop index")
    s.add_argument("--path", required=True)
    s.add_argument("--index", required=True)
    s.add_argument("--split", required=True, help="where to write the published split")
    s.add_argument("--duplicates", required=True, help="report of byte-identical crops")
    s.set_defaults(func=cmd_import_processed)


def cmd_import_processed(a):
    from mammodp.data.processed import duplicate_report, import_processed
    from mammodp.fileio import write_csv, write_json

    index, split = import_processed(a.path)
    write_json(a.split, split)
    write_csv(a.duplicates, duplicate_report(index))
    write_csv(a.index, index)


def add_study_split(sub) -> None:
    s = sub.add_parser("study-split", help="the study's split from the published crops' names")
    s.add_argument("--path", required=True, help="the dataset16062024 folder")
    s.add_argument("--out", required=True, help="split JSON (resources/study_split.json)")
    s.set_defaults(func=cmd_study_split)


def cmd_study_split(a):
    from mammodp.data.processed import study_split
    from mammodp.fileio import write_json

    split = study_split(a.path)
    write_json(a.out, split)
    log.info("study split: %s patients", {k: len(split[k]) for k in ("train", "val", "test")})


def add_fetch_published(sub) -> None:
    s = sub.add_parser("fetch-published", help="download/verify the study's published data")
    s.add_argument("--url", required=True, help="the pinned repository archive")
    s.add_argument("--checksums", required=True)
    s.add_argument("--dataset", help="where dataset16062024 is (or goes)")
    s.add_argument("--synthetic", help="where the c-dcgan samples are (or go)")
    s.add_argument("--no-verify", action="store_true", help="do not check local folders")
    s.add_argument("--out", required=True, help="marker written once everything is verified")
    s.set_defaults(func=cmd_fetch_published)


def cmd_fetch_published(a):
    from mammodp.data.processed import fetch_published

    n = fetch_published(a.url, a.checksums, a.dataset, a.synthetic, verify=not a.no_verify)
    log.info("published data verified (%d files extracted from the archive)", n)
    with atomic_path(a.out) as tmp:
        tmp.write_text(f"verified against {a.checksums}\n")


def add_split(sub) -> None:
    s = sub.add_parser("split", help="patient-level split -> split.json + crops.csv")
    s.add_argument("--index", required=True)
    s.add_argument("--val-fraction", type=float, default=0.15)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--split-file")
    s.add_argument("--out-split", required=True)
    s.add_argument("--out-manifest", required=True)
    s.set_defaults(func=cmd_split)


def cmd_split(a):
    from mammodp.data import split as sp
    from mammodp.data.crops import CROP_COLUMNS
    from mammodp.fileio import read_csv, read_json, write_csv, write_json

    index = read_csv(a.index, required=CROP_COLUMNS)
    if a.split_file:
        split = sp.validate_split_file(read_json(a.split_file), a.split_file)
        source = a.split_file
    else:
        split = sp.make_split(index, a.val_fraction, a.seed)
        source = f"seeded split (seed {a.seed})"
    split = sp.with_external_in_test(index, split)
    manifest = sp.apply_split(index, split, source)
    write_json(a.out_split, split)
    write_csv(a.out_manifest, manifest)
    counts = manifest.groupby(["dataset", "split", "label"]).size().to_dict()
    log.info("split (%s): %s", source, counts)


COMMANDS = (
    add_phantom,
    add_tcia_metadata,
    add_tcia_series,
    add_tcia_batch,
    add_tcia_complete,
    add_lesions,
    add_crop,
    add_import_processed,
    add_study_split,
    add_fetch_published,
    add_split,
)
