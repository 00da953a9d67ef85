# Classification stage: one job per (experiment, seed) of the experiment table; frozen
# backbones read features computed once per backbone and image set.


rule backbone_features:
    input:
        unpack(feature_inputs),
    output:
        "results/features/{backbone}/{imageset}.pt",
    log:
        "results/logs/features/{backbone}/{imageset}.log",
    benchmark:
        "results/benchmarks/features/{backbone}/{imageset}.tsv"
    conda:
        "../envs/classify.yaml"
    threads: config["classifier"]["threads"]
    resources:
        gpu=1 if GPU_JOBS else 0,
    params:
        model=as_json(config["classifier"]["model"]),
        source=lambda wc, input: optional_flag(input, "source_model", "--source-model"),
        generator=lambda wc, input: optional_flag(
            input, "generator_model", "--generator-model"
        ),
        batch_size=config["classifier"]["train"]["feature_batch_size"],
        device=config["device"],
    shell:
        "mammodp backbone-features --images {input.images} --model {params.model:q}"
        " {params.source} --batch-size {params.batch_size} --device {params.device}"
        " --threads {threads} --out {output} > {log} 2>&1"


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
    conda:
        "../envs/classify.yaml"
    threads: config["classifier"]["threads"]
    resources:
        gpu=classify_gpu,
    params:
        job=job_json,
        synthetic=lambda wc, input: optional_flag(input, "synthetic", "--synthetic"),
        source=lambda wc, input: optional_flag(input, "source_model", "--source-model"),
        generator=lambda wc, input: optional_flag(
            input, "generator_model", "--generator-model"
        ),
        features=lambda wc, input: optional_flag(input, "features", "--features"),
        out_dir=lambda wc: run_dir(wc.experiment, wc.seed),
    shell:
        "mammodp classify --job {params.job:q} --manifest {input.manifest}"
        " {params.synthetic} {params.source} {params.generator} {params.features}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
