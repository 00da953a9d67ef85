"""The commands of stage ``fidelity`` (``workflow/rules/fidelity.smk``), each one's arguments
beside its handler."""

from __future__ import annotations

import logging

log = logging.getLogger("mammodp")


def add_frd(sub) -> None:
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


def cmd_frd(a):
    from mammodp.data.split import MANIFEST_COLUMNS
    from mammodp.fidelity import compute_table
    from mammodp.fileio import read_manifest, write_csv

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


COMMANDS = (add_frd,)
