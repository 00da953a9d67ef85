"""The commands of stage ``report`` (``workflow/rules/report.smk``), each one's arguments
beside its handler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("mammodp")


def add_tables(sub) -> None:
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


def cmd_tables(a):
    from mammodp.fileio import Outputs
    from mammodp.report import comparison, tables

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


def add_figures(sub) -> None:
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


def cmd_figures(a):
    from mammodp.fileio import Outputs
    from mammodp.report import figures

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
        from mammodp.synthesis.loss_figure import gan_losses

        gan_losses(a.gan_losses, pair("mcgan_losses"))


def add_provenance(sub) -> None:
    s = sub.add_parser("provenance", help="config, code version and software versions")
    s.add_argument("--config", required=True, help="JSON: the config of this run")
    s.add_argument(
        "--commit", required=True, help="the workflow's git commit (read when the DAG is built)"
    )
    s.add_argument("--source", default="", help="where the workflow's code came from")
    s.add_argument("--software", nargs="*", default=[], help="each environment's versions")
    s.add_argument("--outputs", nargs=3, required=True, help="software.csv=PATH config.yaml=...")
    s.set_defaults(func=cmd_provenance)


def cmd_provenance(a):
    from mammodp import provenance
    from mammodp.fileio import Outputs

    out = Outputs.parse(a.outputs)
    provenance.write(json.loads(a.config), a.commit, out, source=a.source, env_csvs=a.software)


def add_software(sub) -> None:
    s = sub.add_parser("software", help="the versions this environment provides (a CSV)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_software)


def cmd_software(a):
    from mammodp import provenance

    provenance.write_software(a.out)


COMMANDS = (
    add_tables,
    add_figures,
    add_provenance,
    add_software,
)
