# Privacy audit: membership inference (LiRA, shadow heads on the cached features) against every
# head run trained on real crops, a memorisation audit of the synthetic crops, and the audit's
# table and figures. In the default target when audit.enabled.


rule audit_mia:
    input:
        unpack(audit_mia_inputs),
    output:
        summary="results/audit/mia/{experiment}/seed{seed}/summary.json",
        scores="results/audit/mia/{experiment}/seed{seed}/scores.csv",
    log:
        "results/logs/audit/mia/{experiment}/seed{seed}.log",
    benchmark:
        "results/benchmarks/audit/mia/{experiment}/seed{seed}.tsv"
    wildcard_constraints:
        experiment=AUDITED_PATTERN,
    conda:
        "../envs/classify.yaml"
    threads: config["audit"]["threads"]
    params:
        job=job_json,
        audit=audit_spec_json(),
        images=images_arg("images", "real"),
        synthetic=synthetic_args,
        source=lambda wc, input: optional_flag(input, "source_model", "--source-model"),
        source_experiment=audit_source_arg,
        outputs=lambda wc, output: " ".join(f"{k}={v}" for k, v in output.items()),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" audit-mia --job {params.job:q} --audit {params.audit:q}'
        " --manifest {input.manifest} --images {params.images} {params.synthetic}"
        " --features {input.features} --run-model {input.run_model} --privacy {input.privacy}"
        " {params.source} {params.source_experiment}"
        " --outputs {params.outputs} --threads {threads} > {log} 2>&1"


rule audit_memorisation:
    input:
        manifest=f"{DATA}/crops.csv",
        images=made_images("real"),
        synthetic=synthetic_manifest(),
        synthetic_images=made_images("synthetic"),
        features=expand(
            "results/features/pretrained/{imageset}.pt", imageset=["real", "synthetic"]
        ),
    output:
        summary="results/audit/memorisation/summary.json",
        distances="results/audit/memorisation/distances.csv",
        png=report(
            "results/figures/memorisation.png",
            caption="../report/memorisation.rst",
            category="4. Privacy audit",
            labels={"figure": "memorisation audit"},
        ),
        pdf="results/figures/memorisation.pdf",
    log:
        "results/logs/audit/memorisation.log",
    benchmark:
        "results/benchmarks/audit/memorisation.tsv"
    conda:
        "../envs/classify.yaml"
    params:
        images=images_arg("images", "real"),
        synthetic_images=images_arg("synthetic_images", "synthetic"),
        memorisation=config["audit"]["memorisation"],
        seed=config["audit"]["seed"],
        generator=GENERATOR,
        outputs=lambda wc, output: " ".join(f"{k}={v}" for k, v in output.items()),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" audit-memorisation --manifest {input.manifest}'
        " --images {params.images} --synthetic {input.synthetic}"
        " --synthetic-images {params.synthetic_images} --features {input.features}"
        " --image-size {params.memorisation[image_size]}"
        " --quantile {params.memorisation[quantile]} --pairs {params.memorisation[pairs]}"
        " --seed {params.seed} --generator {params.generator}"
        " --outputs {params.outputs} > {log} 2>&1"


rule audit_report:
    input:
        summaries=audit_files("summary"),
        scores=audit_files("scores"),
        experiments=EXPERIMENT_SHEET,
    output:
        csv=report(
            "results/tables/privacy_audit.csv",
            caption="../report/privacy_audit.rst",
            category="4. Privacy audit",
            labels={"table": "privacy audit"},
        ),
        md="results/tables/privacy_audit.md",
        roc_png=report(
            "results/figures/audit_roc.png",
            caption="../report/audit_roc.rst",
            category="4. Privacy audit",
            labels={"figure": "attack ROC (log-log)"},
        ),
        roc_pdf="results/figures/audit_roc.pdf",
        eps_png=report(
            "results/figures/audit_epsilon.png",
            caption="../report/audit_epsilon.rst",
            category="4. Privacy audit",
            labels={"figure": "empirical vs accountant epsilon"},
        ),
        eps_pdf="results/figures/audit_epsilon.pdf",
    log:
        "results/logs/audit/report.log",
    benchmark:
        "results/benchmarks/audit/report.tsv"
    conda:
        "../envs/report.yaml"
    params:
        select=" ".join(SELECTED),
        faithful="--faithful" if config["classifier"]["train"]["faithful"] else "",
        outputs=lambda wc, output: " ".join(f"{k}={v}" for k, v in output.items()),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" audit-report --summaries {input.summaries}'
        " --scores {input.scores} --experiments-table {input.experiments}"
        " --select {params.select} {params.faithful} --outputs {params.outputs} > {log} 2>&1"
