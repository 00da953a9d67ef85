# Report stage: the paper's tables and figures from the per-run files.


rule tables:
    input:
        metrics=run_files("metrics.json"),
        privacy=run_files("privacy.json"),
        experiments=config["experiments"]["table"],
        frd="results/fidelity/frd.csv",
    output:
        main=report(
            multiext("results/tables/main", ".md", ".csv", ".tex"),
            caption="../report/main_table.rst",
            category="Tables",
        ),
        privacy=multiext("results/tables/privacy", ".md", ".csv"),
        fidelity=multiext("results/tables/fidelity", ".md", ".csv"),
    log:
        "results/logs/report/tables.log",
    benchmark:
        "results/benchmarks/report/tables.tsv"
    params:
        select=" ".join(SELECTED),
        seeds=" ".join(map(str, SEEDS)),
    shell:
        "mammodp tables --metrics {input.metrics} --experiments-table {input.experiments}"
        " --select {params.select} --seeds {params.seeds} --frd {input.frd}"
        " --out-dir results/tables > {log} 2>&1"


rule figures:
    input:
        metrics=run_files("metrics.json"),
        experiments=config["experiments"]["table"],
    output:
        report(
            "results/figures/privacy_utility.png",
            caption="../report/privacy_utility.rst",
            category="Figures",
        ),
    log:
        "results/logs/report/figures.log",
    benchmark:
        "results/benchmarks/report/figures.tsv"
    params:
        select=" ".join(SELECTED),
    shell:
        "mammodp figures --metrics {input.metrics} --experiments-table {input.experiments}"
        " --select {params.select} --out {output} > {log} 2>&1"
