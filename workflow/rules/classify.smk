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
        images=lambda wc, input: images_arg("images", wc.imageset)(wc, input),
        source=lambda wc, input: optional_flag(input, "source_model", "--source-model"),
        batch_size=config["classifier"]["train"]["feature_batch_size"],
        precision=config["classifier"]["train"]["feature_precision"],
        device=config["device"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" backbone-features --manifest {input.manifest}'
        " --images {params.images} --model {params.model:q}"
        " {params.source} --batch-size {params.batch_size} --precision {params.precision}"
        " --device {params.device}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule classify:
    input:
        unpack(classify_inputs),
    output:
        **{
            name: f"{run_dir('{experiment}', '{seed}')}/{file}"
            for name, file in RUN_FILES.items()
        },
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
        images=images_arg("images", "real"),
        synthetic=synthetic_args,
        optional=source_and_cache_args,
        outputs=lambda wc, output: " ".join(
            f"{k}={shlex.quote(v)}" for k, v in output.items()
        ),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" classify --job {params.job:q} --manifest {input.manifest}'
        " --images {params.images} {params.synthetic} {params.optional}"
        " --outputs {params.outputs} --threads {threads} > {log} 2>&1"
