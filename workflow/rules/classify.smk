# Classification stage: one job per (experiment, seed) of the experiment table.


rule classify:
    input:
        unpack(classify_inputs),
    output:
        model=f"{run_dir('{experiment}', '{seed}')}/model.pt",
        metrics=f"{run_dir('{experiment}', '{seed}')}/metrics.json",
        predictions=f"{run_dir('{experiment}', '{seed}')}/predictions.csv",
        history=f"{run_dir('{experiment}', '{seed}')}/history.csv",
        privacy=f"{run_dir('{experiment}', '{seed}')}/privacy.json",
    log:
        "results/logs/classify/{experiment}/seed{seed}.log",
    benchmark:
        "results/benchmarks/classify/{experiment}/seed{seed}.tsv"
    threads: config["classifier"]["threads"]
    resources:
        gpu=1 if GPU_JOBS else 0,
    params:
        job=job_json,
        synthetic=lambda wc, input: optional_flag(input, "synthetic", "--synthetic"),
        source=lambda wc, input: optional_flag(input, "source_model", "--source-model"),
        out_dir=lambda wc: run_dir(wc.experiment, wc.seed),
    shell:
        "mammodp classify --job {params.job:q} --manifest {input.manifest}"
        " {params.synthetic} {params.source} --out-dir {params.out_dir} > {log} 2>&1"
