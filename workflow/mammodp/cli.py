"""Command line: one subcommand per Snakemake rule. ``mammodp <command> --help`` lists options.

Problems the user can fix (bad input, missing file, bad config, full disk) end with one line on
stderr, ``mammodp <command>: error: ...``, and exit status 2. Each output file is written
atomically (a temporary file renamed into place), so no file is ever half-written; when a job
with several outputs fails, Snakemake deletes the ones it did write, so a rerun trusts none.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
from pathlib import Path

from .errors import UserError
from .fileio import atomic_path

log = logging.getLogger("mammodp")


def _threads(n: int) -> int:
    os.environ["OMP_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)
    log.info("torch threads: %d", torch.get_num_threads())
    return n


def resolve_device(device: str) -> str:
    """``auto`` means cuda when this machine has a GPU. A GPU job claims its own device first
    (see ``gpu.py``), before CUDA starts."""
    if device == "cpu":
        return device
    from . import gpu

    gpu.assign()
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise UserError("device: cuda, but no GPU is visible here; use device: cpu or auto")
    return "cpu"


def _pairs(pairs: list[str], keys, option: str) -> dict[str, str]:
    """``key=path`` arguments, each of ``keys`` exactly once."""
    from .fileio import Outputs

    out = Outputs.parse(pairs, option).paths
    if sorted(out) != sorted(keys):
        raise UserError(f"{option}: give key=path for each of {', '.join(keys)}")
    return out


def _one_or_list(paths: list[str] | None):
    """One folder as itself (for the messages that name it), several as a list."""
    return paths[0] if paths and len(paths) == 1 else paths


def cmd_phantom(a):
    import shutil
    import tempfile

    from .config import CASE_CSVS
    from .phantom import PhantomSpec, generate

    spec = PhantomSpec(**json.loads(a.spec))
    csvs = _pairs(a.case_csvs, CASE_CSVS, "--case-csvs")
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


def cmd_lesions(a):
    import pandas as pd

    from . import lesions
    from .fileio import write_csv

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
                _one_or_list(a.dicom_root),
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


def cmd_tcia_metadata(a):
    from .config import CASE_CSVS
    from .tcia import download_metadata

    download_metadata(json.loads(a.urls), _pairs(a.out, CASE_CSVS, "--out"))


def cmd_tcia_series(a):
    from .fileio import write_csv
    from .tcia import list_series

    patients = a.patients.split(",") if a.patients else None
    series = list_series(
        a.api_url, a.collection, [a.mass_train, a.mass_test], a.max_patients, patients, a.batch_size
    )
    with atomic_path(a.patients_out) as tmp:
        tmp.write_text("\n".join(series.attrs["patients"]) + "\n")
    write_csv(a.out, series)
    log.info("%d series in %d batches", len(series), series["batch"].nunique())


def cmd_tcia_batch(a):
    from .fileio import read_csv
    from .tcia import download_batch

    series = read_csv(a.series, required=["series_uid", "image_count", "batch"])
    download_batch(a.api_url, series, a.batch, a.root, a.out, connections=a.connections)


def cmd_tcia_complete(a):
    import pandas as pd

    from .fileio import read_csv, write_csv

    series = read_csv(a.series, required=["series_uid", "image_count", "batch"])
    done = pd.concat([pd.read_csv(b, sep="\t") for b in a.batches], ignore_index=True)
    missing = sorted(set(series["series_uid"]) - set(done["series_uid"]))
    if missing:
        raise UserError(f"{len(missing)} series are not downloaded yet, e.g. {missing[:3]}")
    write_csv(a.out, done)


def cmd_crop(a):
    from .crops import CropSpec, make_crops
    from .fileio import read_csv, write_csv
    from .lesions import LESION_COLUMNS

    lesion_table = read_csv(a.lesions, required=LESION_COLUMNS)
    spec = CropSpec(**json.loads(a.spec))
    index = make_crops(
        lesion_table,
        a.out_dir,
        spec,
        workers=a.workers,
        dicom_root=_one_or_list(a.dicom_root),
        bcdr_root=a.bcdr,
        bcdr_intensity=a.bcdr_intensity,
    )
    write_csv(a.index, index)
    log.info("%d crops written to %s", len(index), a.out_dir)


def cmd_import_processed(a):
    from .fileio import write_csv, write_json
    from .processed import duplicate_report, import_processed

    index, split = import_processed(a.path)
    write_json(a.split, split)
    write_csv(a.duplicates, duplicate_report(index))
    write_csv(a.index, index)


def cmd_study_split(a):
    from .fileio import write_json
    from .processed import study_split

    split = study_split(a.path)
    write_json(a.out, split)
    log.info("study split: %s patients", {k: len(split[k]) for k in ("train", "val", "test")})


def cmd_fetch_published(a):
    from .processed import fetch_published

    n = fetch_published(a.url, a.checksums, a.dataset, a.synthetic, verify=not a.no_verify)
    log.info("published data verified (%d files extracted from the archive)", n)
    with atomic_path(a.out) as tmp:
        tmp.write_text(f"verified against {a.checksums}\n")


def cmd_split(a):
    from . import split as sp
    from .crops import CROP_COLUMNS
    from .fileio import read_csv, read_json, write_csv, write_json

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


def cmd_medigan_samples(a):
    from .fileio import write_csv
    from .medigan_source import generate

    _threads(a.threads)
    write_csv(a.manifest, generate(a.workdir, a.model_id, a.n_per_class, a.seed, a.out_dir))


def cmd_train_gan(a):
    import torch

    from . import mcgan, models
    from .fileio import read_manifest
    from .split import MANIFEST_COLUMNS

    _threads(a.threads)
    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    train = manifest[(manifest["split"] == "train") & (manifest["dataset"] == "cbis-ddsm")]
    images = models.load_images(train["path"], mcgan.IMAGE_SIZE, strict=True)
    labels = torch.tensor(train["label"].astype(int).values)
    spec_dict = json.loads(a.spec)
    dp = mcgan.GanDPSpec(**spec_dict.pop("dp", {}))
    spec = mcgan.GanSpec(**spec_dict)
    device = resolve_device(a.device)
    last = mcgan.train(images, labels, spec, a.out_dir, threads=a.threads, device=device, dp=dp)
    log.info("MCGAN trained on %d crops: %s", len(train), last)


def cmd_sample_gan(a):
    from . import mcgan
    from .fileio import write_csv

    _threads(a.threads)
    name = f"generator_epoch{a.epoch:05d}.pt" if a.epoch else "generator.pt"
    checkpoint = Path(a.model_dir) / name
    if not checkpoint.is_file():
        saved = sorted(p.name for p in Path(a.model_dir).glob("generator*.pt"))
        raise UserError(
            f"{checkpoint}: no such MCGAN checkpoint (saved: {', '.join(saved) or 'none'}); "
            "train the MCGAN first, or set synthesis.mcgan.sample_epoch to a checkpoint epoch."
        )
    manifest = mcgan.sample(checkpoint, a.n_per_class, a.seed, a.out_dir)
    write_csv(a.manifest, manifest)


def cmd_published_samples(a):
    from .fileio import write_csv
    from .synthesis import published_manifest

    write_csv(a.manifest, published_manifest(a.path))


def cmd_frd(a):
    from .fidelity import compute_table
    from .fileio import read_manifest, write_csv
    from .split import MANIFEST_COLUMNS

    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    table = compute_table(
        manifest,
        synthetic,
        a.versions,
        a.seed,
        a.threads,
        a.max_images,
        design=a.design,
        set_size=a.set_size,
        normalisation=a.normalisation,
    )
    write_csv(a.out, table)


def cmd_backbone_features(a):
    import torch

    from . import classify, models
    from .fileio import atomic_path, read_manifest
    from .progress import track

    _threads(a.threads)
    device = resolve_device(a.device)
    images = read_manifest(a.manifest, a.images, required=["path"])
    paths = sorted(set(images["path"]))
    # Flips only where a head trains (real training crops, synthetic crops): evaluation uses
    # the unflipped view, and its other variants are NaN (refused as training inputs).
    trained = images if "split" not in images else images[images["split"] == "train"]
    flipped = set(trained["path"])
    spec = models.ModelSpec.from_dict(json.loads(a.model))
    backbone = (
        models.load_backbone(a.source_model) if a.source_model else models.create_backbone(spec)
    )
    run = {"batch_size": a.batch_size, "device": device, "precision": a.precision}
    feats = []
    chunks = range(0, len(paths), 512)  # bounded memory: images are loaded in chunks
    for start in track(chunks, len(chunks), "features", "chunks of 512 images", log):
        chunk = paths[start : start + 512]
        x = models.load_images(chunk, spec.input_size)
        out = models.backbone_features(backbone, x, ("none",), **run).expand(-1, 4, -1).clone()
        out[:, 1:] = float("nan")
        rows = torch.tensor([p in flipped for p in chunk])
        if rows.any():
            out[rows, 1:] = models.backbone_features(backbone, x[rows], models.FLIPS[1:], **run)
        feats.append(out)
    blob = classify.feature_file(paths, torch.cat(feats))
    with atomic_path(a.out) as tmp:
        torch.save(blob, tmp)
    log.info(
        "%d images (%d with flips) x %d variants x %d features",
        len(paths),
        len(flipped),
        *blob["features"].shape[1:],
    )


def cmd_classify(a):
    from . import classify
    from .fileio import read_json, read_manifest
    from .split import MANIFEST_COLUMNS

    _threads(a.threads)  # the job's {threads}: not part of what it computes
    job = _job(a.job, a.threads)
    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = None
    if a.synthetic:
        synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    generator = read_json(Path(a.generator_model) / "privacy.json") if a.generator_model else None
    metrics = classify.run(
        job,
        manifest,
        synthetic,
        a.source_model,
        None,
        a.features,
        generator_privacy=generator,
        outputs=_pairs(a.outputs, classify.RUN_FILES, "--outputs"),
        backbone_model=a.backbone_model,
        source_privacy=read_json(a.source_privacy) if a.source_privacy else None,
    )
    log.info("test metrics: %s", json.dumps(metrics["test"]))


def _job(text: str, threads: int):
    """A classifier job from the rules' JSON (``job_json``)."""
    from . import classify, models

    spec = json.loads(text)
    return classify.Job(
        experiment=classify.Experiment(**spec["experiment"]),
        seed=int(spec["seed"]),
        model=models.ModelSpec.from_dict(spec["model"]),
        train=classify.TrainSpec(**spec["train"]),
        dp=classify.DPSpec(**{**spec["dp"], "epsilon_window": tuple(spec["dp"]["epsilon_window"])}),
        device=resolve_device(spec.get("device", "cpu")),
        threads=threads,
        synthetic_generator_private=bool(spec.get("synthetic_generator_private", False)),
    )


def cmd_audit_mia(a):
    from . import audit_report, classify, mia
    from .fileio import read_json, read_manifest
    from .split import MANIFEST_COLUMNS

    _threads(a.threads)
    job = _job(a.job, a.threads)
    spec = mia.AuditSpec(**json.loads(a.audit))
    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = None
    if a.synthetic:
        synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    summary, scores = mia.run_audit(
        job, spec, manifest, synthetic, a.features, a.run_model, a.source_model
    )
    out = _pairs(a.outputs, ["summary", "scores"], "--outputs")
    audit_report.write_mia(
        summary,
        mia.scores_frame(scores),
        job.experiment,
        classify.Experiment(**json.loads(a.source_experiment)) if a.source_experiment else None,
        mia.accountant_epsilon(read_json(a.privacy)),
        out,
    )
    log.info(
        "attack AUC %s, empirical epsilon >= %.3f",
        summary["shadow"]["auc"],
        summary["empirical"]["epsilon_lower_bound"],
    )


def cmd_audit_memorisation(a):
    from . import audit_report, classify, memorisation
    from .fileio import read_manifest
    from .labels import GENERATOR_TITLE
    from .split import MANIFEST_COLUMNS

    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    features = classify.load_feature_cache(a.features) if a.features else None
    result = memorisation.audit(manifest, synthetic, a.image_size, a.seed, a.quantile, features)
    out = _pairs(a.outputs, ["summary", "distances", "png", "pdf"], "--outputs")
    audit_report.write_memorisation(result, out)
    title = GENERATOR_TITLE.get(a.generator, a.generator)
    audit_report.memorisation_figure(result, a.pairs, (out["png"], out["pdf"]), title)
    for space in memorisation.SPACES:
        if space in result:
            r = result[space]
            log.info(
                "%s: %.3f nearest is train, %d near-copies (%.1f expected)",
                space,
                r["share_nearest_is_train"],
                r["near_copies"],
                r["near_copies_expected"],
            )


def cmd_audit_report(a):
    from . import audit_report
    from .fileio import atomic_path, write_csv

    out = _pairs(a.outputs, ["csv", "md", "roc_png", "roc_pdf", "eps_png", "eps_pdf"], "--outputs")
    df = audit_report.audit_table(a.summaries, a.experiments_table, a.select, a.faithful)
    write_csv(out["csv"], df)
    with atomic_path(out["md"]) as tmp:
        tmp.write_text(audit_report.audit_markdown(df))
    audit_report.roc_figure(a.scores, a.experiments_table, (out["roc_png"], out["roc_pdf"]))
    audit_report.epsilon_figure(df, (out["eps_png"], out["eps_pdf"]))


def cmd_provenance(a):
    from . import provenance
    from .fileio import Outputs

    out = Outputs.parse(a.outputs)
    provenance.write(json.loads(a.config), a.commit, out, source=a.source, env_csvs=a.software)


def cmd_software(a):
    from . import provenance

    provenance.write_software(a.out)


def cmd_tables(a):
    from . import comparison, tables
    from .fileio import Outputs

    ctx = comparison.Context.from_json(a.context)
    out = Outputs.parse(a.outputs)
    tables.write_tables(
        a.metrics,
        a.experiments_table,
        a.select,
        a.seeds,
        a.frd,
        out,
        source=ctx.data_source,
        privacy_paths=a.privacy or None,
    )
    comparison.write_comparison(
        a.metrics,
        a.experiments_table,
        a.select,
        ctx,
        a.paper_results,
        a.paper_fidelity,
        a.frd,
        out,
    )


def cmd_figures(a):
    from . import figures
    from .fileio import Outputs

    out = Outputs.parse(a.outputs)

    def pair(name: str) -> tuple[Path, Path]:
        return out / f"{name}.png", out / f"{name}.pdf"

    src = a.data_source
    figures.privacy_utility(
        a.metrics, a.experiments_table, a.select, pair("privacy_utility"), source=src
    )
    figures.curves(
        a.metrics,
        a.experiments_table,
        a.select,
        pair("roc_pr"),
        a.curve_epsilon,
        source=src,
        prediction_paths=a.predictions or None,
    )
    figures.sample_grid(
        a.manifest,
        a.synthetic,
        pair("samples"),
        seed=a.seed,
        source=src,
        generator=a.generator,
        images=a.images,
        synthetic_images=a.synthetic_images,
    )
    figures.paper_comparison(a.comparison, pair("paper_comparison"), source=src)
    if a.gan_losses:
        figures.gan_losses(a.gan_losses, pair("mcgan_losses"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mammodp", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("phantom", help="write the embedded phantom cohort")
    s.add_argument("--spec", required=True, help="JSON: seed, patients_*, height, width")
    s.add_argument("--case-csvs", nargs=4, required=True, help="mass_train=PATH ... (4 keys)")
    s.add_argument("--dicom", required=True, help="the CBIS-DDSM-like DICOM folder to write")
    s.add_argument("--bcdr", required=True, help="the BCDR-like folder to write")
    s.set_defaults(func=cmd_phantom)

    s = sub.add_parser("tcia-metadata", help="download the CBIS-DDSM case-description CSVs")
    s.add_argument(
        "--urls", required=True, help="JSON: mass_train, mass_test, calc_train, calc_test"
    )
    s.add_argument("--out", nargs=4, required=True, help="mass_train=PATH ... (4 keys)")
    s.set_defaults(func=cmd_tcia_metadata)

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

    s = sub.add_parser("tcia-batch", help="download and verify one batch of series")
    s.add_argument("--api-url", required=True)
    s.add_argument("--series", required=True)
    s.add_argument("--batch", type=int, required=True)
    s.add_argument("--root", required=True, help="the batch's folder (its rule's output)")
    s.add_argument("--out", required=True, help="batch marker, written last")
    s.add_argument("--connections", type=int, default=4, help="batches fetching at once")
    s.set_defaults(func=cmd_tcia_batch)

    s = sub.add_parser("tcia-complete", help="check that every series is downloaded")
    s.add_argument("--series", required=True)
    s.add_argument("--batches", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_tcia_complete)

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

    s = sub.add_parser("import-processed", help="the study's published crops -> crop index")
    s.add_argument("--path", required=True)
    s.add_argument("--index", required=True)
    s.add_argument("--split", required=True, help="where to write the published split")
    s.add_argument("--duplicates", required=True, help="report of byte-identical crops")
    s.set_defaults(func=cmd_import_processed)

    s = sub.add_parser("study-split", help="the study's split from the published crops' names")
    s.add_argument("--path", required=True, help="the dataset16062024 folder")
    s.add_argument("--out", required=True, help="split JSON (resources/study_split.json)")
    s.set_defaults(func=cmd_study_split)

    s = sub.add_parser("fetch-published", help="download/verify the study's published data")
    s.add_argument("--url", required=True, help="the pinned repository archive")
    s.add_argument("--checksums", required=True)
    s.add_argument("--dataset", help="where dataset16062024 is (or goes)")
    s.add_argument("--synthetic", help="where the c-dcgan samples are (or go)")
    s.add_argument("--no-verify", action="store_true", help="do not check local folders")
    s.add_argument("--out", required=True, help="marker written once everything is verified")
    s.set_defaults(func=cmd_fetch_published)

    s = sub.add_parser("split", help="patient-level split -> split.json + crops.csv")
    s.add_argument("--index", required=True)
    s.add_argument("--val-fraction", type=float, default=0.15)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--split-file")
    s.add_argument("--out-split", required=True)
    s.add_argument("--out-manifest", required=True)
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("train-gan", help="train the MCGAN on the real training crops")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--spec", required=True, help="JSON of GanSpec")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_train_gan)

    s = sub.add_parser("sample-gan", help="sample synthetic crops from a trained MCGAN")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--epoch", type=int, help="sample this checkpoint (default: the last epoch)")
    s.add_argument("--n-per-class", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_sample_gan)

    s = sub.add_parser("medigan-samples", help="synthetic crops through medigan's Generators")
    s.add_argument("--workdir", required=True, help="medigan's config/ and models/ live here")
    s.add_argument("--model-id", required=True)
    s.add_argument("--n-per-class", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_medigan_samples)

    s = sub.add_parser("published-samples", help="manifest of the study's synthetic crops")
    s.add_argument("--path", required=True)
    s.add_argument("--manifest", required=True)
    s.set_defaults(func=cmd_published_samples)

    s = sub.add_parser("frd", help="Frechet Radiomics Distance table")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--synthetic", required=True)
    s.add_argument("--synthetic-images", required=True, help="the synthetic manifest's folder")
    s.add_argument("--versions", nargs="+", default=["v0"])
    s.add_argument("--max-images", type=int, help="cap each pool at N images (seeded sample)")
    s.add_argument(
        "--design",
        choices=["halves", "study"],
        default="halves",
        help="halves: one pair per comparison; study: the sheet's three pairs of disjoint sets",
    )
    s.add_argument(
        "--set-size", type=int, help="study design: images per set (default: a third of the pool)"
    )
    s.add_argument(
        "--normalisation",
        choices=["default", "joint", "independent", "d1"],
        default="default",
        help="frd-score's norm_ref (default: the version's own, v0 joint, v1 d1)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_frd)

    s = sub.add_parser("classify", help="train and test one (experiment, seed) job")
    s.add_argument("--job", required=True, help="JSON: experiment row, seed, model, train, dp")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--synthetic")
    s.add_argument("--synthetic-images", help="the synthetic manifest's folder")
    s.add_argument("--source-model")
    s.add_argument("--source-privacy", help="privacy.json of the run whose training it loads")
    s.add_argument("--backbone-model", help="the checkpoint holding the source's frozen backbone")
    s.add_argument("--generator-model", help="the DP-MCGAN's model folder (its privacy.json)")
    s.add_argument("--features", nargs="*", help="cached backbone features (frozen backbones)")
    s.add_argument("--outputs", nargs=5, required=True, help="model=PATH metrics=PATH ...")
    s.add_argument("--threads", type=int, default=1, help="torch threads (the rule's {threads})")
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("audit-mia", help="membership-inference audit (LiRA) of one run")
    s.add_argument("--job", required=True, help="JSON: the run's job (as for classify)")
    s.add_argument("--audit", required=True, help="JSON: shadow_models, canaries, ... (audit)")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--synthetic")
    s.add_argument("--synthetic-images", help="the synthetic manifest's folder")
    s.add_argument("--features", nargs="+", required=True, help="the run's cached features")
    s.add_argument("--run-model", required=True, help="the run's model.pt (the target)")
    s.add_argument("--privacy", required=True, help="the run's privacy.json")
    s.add_argument("--source-model", help="the source model a from: experiment starts from")
    s.add_argument("--source-experiment", help="JSON: its source experiment's row")
    s.add_argument("--outputs", nargs=2, required=True, help="summary=PATH scores=PATH")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_audit_mia)

    s = sub.add_parser("audit-memorisation", help="memorisation audit of the synthetic crops")
    s.add_argument("--manifest", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--synthetic", required=True)
    s.add_argument("--synthetic-images", required=True)
    s.add_argument("--features", nargs="*", default=[], help="cached features (feature space)")
    s.add_argument("--image-size", type=int, default=64, help="pixel space: crops resized to")
    s.add_argument("--quantile", type=float, default=0.01, help="near-copy threshold quantile")
    s.add_argument("--pairs", type=int, default=8, help="closest pairs in the figure")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--generator", required=True, help="synthesis.generator (the figure's title)")
    s.add_argument(
        "--outputs", nargs=4, required=True, help="summary=PATH distances=PATH png=PATH pdf=PATH"
    )
    s.set_defaults(func=cmd_audit_memorisation)

    s = sub.add_parser("audit-report", help="the privacy-audit table and figures")
    s.add_argument("--summaries", nargs="*", default=[], help="audit summary.json per run")
    s.add_argument("--scores", nargs="*", default=[], help="audit scores.csv per run")
    s.add_argument("--experiments-table", required=True)
    s.add_argument("--select", nargs="+", required=True)
    s.add_argument("--faithful", action="store_true", help="train.faithful is set")
    s.add_argument("--outputs", nargs=6, required=True, help="csv=PATH md=PATH roc_png=...")
    s.set_defaults(func=cmd_audit_report)

    s = sub.add_parser("backbone-features", help="pooled backbone features per image and flip")
    s.add_argument("--manifest", required=True, help="a manifest CSV with a path column")
    s.add_argument("--images", required=True, help="the image folder the manifest describes")
    s.add_argument("--model", required=True, help="JSON: classifier.model")
    s.add_argument("--source-model", help="take the backbone from this checkpoint instead")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_backbone_features)

    s = sub.add_parser("tables", help="render the paper's tables")
    s.add_argument("--metrics", nargs="*", default=[])
    s.add_argument("--experiments-table", required=True)
    s.add_argument("--select", nargs="+", required=True)
    s.add_argument("--seeds", nargs="+", type=int, required=True)
    s.add_argument("--frd")
    s.add_argument(
        "--context",
        required=True,
        help="JSON: data source, generator, classifier.model, epochs, seeds (comparability)",
    )
    s.add_argument("--paper-results", required=True, help="resources/paper_results.csv")
    s.add_argument("--paper-fidelity", required=True, help="resources/paper_fidelity.csv")
    s.add_argument("--privacy", nargs="*", default=[], help="privacy.json per run (as --metrics)")
    s.add_argument("--outputs", nargs="+", required=True, help="main.csv=PATH ... (each table)")
    s.set_defaults(func=cmd_tables)

    s = sub.add_parser("provenance", help="config, code version and software versions")
    s.add_argument("--config", required=True, help="JSON: the config of this run")
    s.add_argument(
        "--commit", required=True, help="the workflow's git commit (read when the DAG is built)"
    )
    s.add_argument("--source", default="", help="where the workflow's code came from")
    s.add_argument("--software", nargs="*", default=[], help="each environment's versions")
    s.add_argument("--outputs", nargs=3, required=True, help="software.csv=PATH config.yaml=...")
    s.set_defaults(func=cmd_provenance)

    s = sub.add_parser("software", help="the versions this environment provides (a CSV)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_software)

    s = sub.add_parser("figures", help="render the paper's figures (PNG and PDF)")
    s.add_argument("--metrics", nargs="*", default=[])
    s.add_argument("--experiments-table", required=True)
    s.add_argument("--select", nargs="+", required=True)
    s.add_argument("--manifest", required=True, help="crops.csv (real crops for the grid)")
    s.add_argument("--images", required=True, help="the crop folder the manifest describes")
    s.add_argument("--synthetic", required=True, help="synthetic manifest (for the grid)")
    s.add_argument("--synthetic-images", required=True, help="the synthetic manifest's folder")
    s.add_argument("--predictions", nargs="*", default=[], help="predictions.csv per run")
    s.add_argument("--gan-losses", help="MCGAN losses.csv (when the MCGAN was trained here)")
    s.add_argument("--comparison", required=True, help="paper_comparison.csv (the tables rule's)")
    s.add_argument("--data-source", required=True, help="data.source: names the data in the titles")
    s.add_argument("--generator", required=True, help="synthesis.generator (sample grid titles)")
    s.add_argument("--curve-epsilon", type=float, default=6.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--outputs", nargs="+", required=True, help="roc_pr.png=PATH ... (PNG, PDF)")
    s.set_defaults(func=cmd_figures)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    # pydicom logs a decoder's traceback before raising; the error we raise says it in one line.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    _exit_through_python_on_sigterm()
    try:
        args.func(args)
    except UserError as e:
        print(f"mammodp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        # An input that vanished between Snakemake's check and the read: one line, not a trace.
        print(
            f"mammodp {args.command}: error: {e.filename or e}: no such file; check the path in "
            "the config, or rebuild it (snakemake --forcerun <the rule that writes it>).",
            file=sys.stderr,
        )
        return 2
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        print(
            f"mammodp {args.command}: error: cannot write {e.filename or 'an output'}: "
            f"{e.strerror}. Free disk space (or fix the folder's permissions) and rerun; "
            "nothing partial was kept.",
            file=sys.stderr,
        )
        return 2
    return 0


WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES}
_fork_hook_installed = False


def _exit_through_python_on_sigterm() -> None:
    """SLURM's time limit and scancel send SIGTERM: exit through Python so that ``finally``
    blocks and atexit handlers release this job's GPU or download slot locks. Forked workers
    (frd-score's and our process pools) get the default action back: a pool terminates its
    workers with SIGTERM, and a worker that raised SystemExit inside the pool's queue lock could
    hang the pool's shutdown (seen with frd-score's pool)."""
    global _fork_hook_installed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not _fork_hook_installed:  # once per process (tests call main() in-process, often)
        os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
        _fork_hook_installed = True


if __name__ == "__main__":
    sys.exit(main())
