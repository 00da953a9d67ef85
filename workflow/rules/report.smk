# Report stage: the paper's tables and figures from the per-run files, and provenance.


rule tables:
    input:
        metrics=run_files("metrics.json"),
        privacy=run_files("privacy.json"),
        experiments=EXPERIMENT_SHEET,
        frd="results/fidelity/frd.csv",
        # Shipped with the workflow: the study's own numbers, found from any working directory.
        paper_results=workflow.source_path("../../resources/paper_results.csv"),
        paper_fidelity=workflow.source_path("../../resources/paper_fidelity.csv"),
    output:
        main=multiext("results/tables/main", ".md", ".tex"),
        main_csv=report(
            "results/tables/main.csv",
            caption="../report/main_table.rst",
            category="1. Tables",
            labels={"table": "main results"},
        ),
        privacy_md="results/tables/privacy.md",
        privacy=report(
            "results/tables/privacy.csv",
            caption="../report/privacy_table.rst",
            category="1. Tables",
            labels={"table": "privacy"},
        ),
        fidelity_md="results/tables/fidelity.md",
        fidelity=report(
            "results/tables/fidelity.csv",
            caption="../report/frd.rst",
            category="1. Tables",
            labels={"table": "fidelity (FRD)"},
        ),
        comparison_md="results/tables/paper_comparison.md",
        comparison=report(
            "results/tables/paper_comparison.csv",
            caption="../report/paper_comparison.rst",
            category="1. Tables",
            labels={"table": "published vs ours"},
        ),
        comparison_fidelity=report(
            "results/tables/paper_comparison_fidelity.csv",
            caption="../report/paper_comparison_fidelity.rst",
            category="1. Tables",
            labels={"table": "published vs ours (FRD)"},
        ),
    log:
        "results/logs/report/tables.log",
    benchmark:
        "results/benchmarks/report/tables.tsv"
    conda:
        "../envs/report.yaml"
    params:
        select=" ".join(SELECTED),
        seeds=" ".join(map(str, SEEDS)),
        context=comparison_context(),
        labels=REPORT_LABELS,
        outputs=outputs_arg,
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" tables --metrics {input.metrics} --privacy {input.privacy}'
        " --experiments-table {input.experiments}"
        " --select {params.select} --seeds {params.seeds} --frd {input.frd}"
        " --context {params.context:q} --paper-results {input.paper_results}"
        " --paper-fidelity {input.paper_fidelity} --outputs {params.outputs} > {log} 2>&1"


rule figures:
    input:
        unpack(figure_inputs),
    output:
        privacy_utility=report(
            "results/figures/privacy_utility.png",
            caption="../report/privacy_utility.rst",
            category="2. Figures",
            labels={"figure": "privacy-utility"},
        ),
        curves=report(
            "results/figures/roc_pr.png",
            caption="../report/roc_pr.rst",
            category="2. Figures",
            labels={"figure": "ROC and precision-recall"},
        ),
        samples=report(
            "results/figures/samples.png",
            caption="../report/samples.rst",
            category="2. Figures",
            labels={"figure": "real vs synthetic crops"},
        ),
        comparison=report(
            "results/figures/paper_comparison.png",
            caption="../report/paper_comparison_figure.rst",
            category="2. Figures",
            labels={"figure": "published vs ours (AUROC)"},
        ),
        pdfs=multiext(
            "results/figures/",
            "privacy_utility.pdf",
            "roc_pr.pdf",
            "samples.pdf",
            "paper_comparison.pdf",
        ),
        gan=gan_loss_figures(),
    log:
        "results/logs/report/figures.log",
    benchmark:
        "results/benchmarks/report/figures.tsv"
    conda:
        "../envs/report.yaml"
    params:
        select=" ".join(SELECTED),
        gan=lambda wc, input: (
            f"--gan-losses {input.losses}/losses.csv"
            if "losses" in input.keys()
            else ""
        ),
        seed=config["synthesis"]["seed"],
        source=config["data"]["source"],
        generator=GENERATOR,
        labels=REPORT_LABELS,
        images=images_arg("images", "real"),
        synthetic_images=images_arg("synthetic_images", "synthetic"),
        outputs=outputs_arg,
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" figures --metrics {input.metrics} --predictions {input.predictions}'
        " --experiments-table {input.experiments} --select {params.select}"
        " --manifest {input.manifest} --images {params.images}"
        " --synthetic {input.synthetic} --synthetic-images {params.synthetic_images}"
        " --comparison {input.comparison} --data-source {params.source}"
        " --generator {params.generator}"
        " {params.gan} --seed {params.seed} --outputs {params.outputs} > {log} 2>&1"


rule software:
    output:
        SOFTWARE,
    log:
        "results/logs/report/software/{env}.log",
    benchmark:
        "results/benchmarks/report/software/{env}.tsv"
    # Each rule family's environment: under --sdm conda, what its jobs really ran with.
    conda:
        "../envs/{env}.yaml"
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" software --out {output} > {log} 2>&1'


rule provenance:
    input:
        software=expand(SOFTWARE, env=ENVIRONMENTS),
    output:
        software=report(
            "results/provenance/software.csv",
            caption="../report/software.rst",
            category="3. Provenance",
            labels={"item": "software versions"},
        ),
        config=report(
            "results/provenance/config.yaml",
            caption="../report/config.rst",
            category="3. Provenance",
            labels={"item": "configuration"},
        ),
        run=report(
            "results/provenance/run.json",
            caption="../report/run.rst",
            category="3. Provenance",
            labels={"item": "code version and config hash"},
        ),
    log:
        "results/logs/report/provenance.log",
    benchmark:
        "results/benchmarks/report/provenance.tsv"
    conda:
        "../envs/report.yaml"
    params:
        config=as_json(config),
        # A param, so that a new commit reruns this rule and run.json never goes stale.
        # Read when the job is planned, not at every parse (SLURM jobs parse the workflow too).
        commit=lambda wc: git_commit(WORKFLOW_DIR),
        source=WORKFLOW_SOURCE,
        outputs=outputs_arg,
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" provenance --config {params.config:q} --commit {params.commit:q}'
        " --source {params.source:q} --software {input.software}"
        " --outputs {params.outputs} > {log} 2>&1"
