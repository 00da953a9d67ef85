"""The commands of stage ``audit`` (``workflow/rules/audit.smk``), each one's arguments
beside its handler."""

from __future__ import annotations

import json
import logging

from mammodp.config import Experiment
from mammodp.fileio import atomic_path

from .common import job_from_json, named_paths, set_threads

log = logging.getLogger("mammodp")


def add_audit_mia(sub) -> None:
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


def cmd_audit_mia(a):
    from mammodp.audit import mia
    from mammodp.audit import summary as audit_summary
    from mammodp.data.split import MANIFEST_COLUMNS
    from mammodp.fileio import read_json, read_manifest

    set_threads(a.threads)
    job = job_from_json(a.job, a.threads)
    spec = mia.AuditSpec(**json.loads(a.audit))
    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = None
    if a.synthetic:
        synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    summary, scores = mia.run_audit(
        job, spec, manifest, synthetic, a.features, a.run_model, a.source_model
    )
    out = named_paths(a.outputs, ["summary", "scores"], "--outputs")
    audit_summary.write_mia(
        summary,
        mia.scores_frame(scores),
        job.experiment,
        Experiment(**json.loads(a.source_experiment)) if a.source_experiment else None,
        mia.accountant_epsilon(read_json(a.privacy)),
        out,
    )
    log.info(
        "attack AUC %s, empirical epsilon >= %.3f",
        summary["shadow"]["auc"],
        summary["empirical"]["epsilon_lower_bound"],
    )


def add_audit_memorisation(sub) -> None:
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


def cmd_audit_memorisation(a):
    from mammodp import classify
    from mammodp.audit import memorisation
    from mammodp.audit import summary as audit_summary
    from mammodp.data.split import MANIFEST_COLUMNS
    from mammodp.fileio import read_manifest
    from mammodp.labels import GENERATOR_TITLE

    manifest = read_manifest(a.manifest, a.images, required=MANIFEST_COLUMNS)
    synthetic = read_manifest(a.synthetic, a.synthetic_images, required=["path", "label"])
    features = classify.load_feature_cache(a.features) if a.features else None
    result = memorisation.audit(manifest, synthetic, a.image_size, a.seed, a.quantile, features)
    out = named_paths(a.outputs, ["summary", "distances", "png", "pdf"], "--outputs")
    audit_summary.write_memorisation(result, out)
    title = GENERATOR_TITLE.get(a.generator, a.generator)
    audit_summary.memorisation_figure(result, a.pairs, (out["png"], out["pdf"]), title)
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


def add_audit_report(sub) -> None:
    s = sub.add_parser("audit-report", help="the privacy-audit table and figures")
    s.add_argument("--summaries", nargs="*", default=[], help="audit summary.json per run")
    s.add_argument("--scores", nargs="*", default=[], help="audit scores.csv per run")
    s.add_argument("--experiments-table", required=True)
    s.add_argument("--select", nargs="+", required=True)
    s.add_argument("--faithful", action="store_true", help="train.faithful is set")
    s.add_argument("--outputs", nargs=6, required=True, help="csv=PATH md=PATH roc_png=...")
    s.set_defaults(func=cmd_audit_report)


def cmd_audit_report(a):
    from mammodp.audit import summary as audit_summary
    from mammodp.fileio import write_csv

    out = named_paths(
        a.outputs, ["csv", "md", "roc_png", "roc_pdf", "eps_png", "eps_pdf"], "--outputs"
    )
    df = audit_summary.audit_table(a.summaries, a.experiments_table, a.select, a.faithful)
    write_csv(out["csv"], df)
    with atomic_path(out["md"]) as tmp:
        tmp.write_text(audit_summary.audit_markdown(df))
    audit_summary.roc_figure(a.scores, a.experiments_table, (out["roc_png"], out["roc_pdf"]))
    audit_summary.epsilon_figure(df, (out["eps_png"], out["eps_pdf"]))


COMMANDS = (
    add_audit_mia,
    add_audit_memorisation,
    add_audit_report,
)
