# Synthesis stage: every generator ends in results/synthesis/<generator>/manifest.csv.


rule train_mcgan:
    input:
        manifest=f"{DATA}/crops.csv",
        images=made_images("real"),
    output:
        directory("results/synthesis/mcgan/model"),
    log:
        "results/logs/synthesis/train_mcgan.log",
    benchmark:
        "results/benchmarks/synthesis/train_mcgan.tsv"
    conda:
        "../envs/synthesis.yaml"
    threads: config["synthesis"]["threads"]
    resources:
        gpu=1 if GPU_JOBS else 0,
    params:
        spec=as_json(config["synthesis"]["mcgan"]),
        device=config["device"],
        images=images_arg("images", "real"),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" train-gan --manifest {input.manifest} --images {params.images} --spec {params.spec:q} --out-dir {output}'
        " --threads {threads} --device {params.device} > {log} 2>&1"


rule sample_mcgan:
    input:
        "results/synthesis/mcgan/model",
    output:
        images=directory("results/synthesis/mcgan/images"),
        manifest="results/synthesis/mcgan/manifest.csv",
    log:
        "results/logs/synthesis/sample_mcgan.log",
    benchmark:
        "results/benchmarks/synthesis/sample_mcgan.tsv"
    conda:
        "../envs/synthesis.yaml"
    threads: config["synthesis"]["threads"]
    params:
        n=config["synthesis"]["n_per_class"],
        seed=config["synthesis"]["seed"],
        epoch=(
            f"--epoch {config['synthesis']['mcgan']['sample_epoch']}"
            if config["synthesis"]["mcgan"]["sample_epoch"]
            else ""
        ),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" sample-gan --model-dir {input} {params.epoch} --n-per-class {params.n}'
        " --seed {params.seed}"
        " --out-dir {output.images} --manifest {output.manifest} --threads {threads}"
        " > {log} 2>&1"


rule published_samples:
    input:
        "resources/mammo_dp.verified",
    output:
        "results/synthesis/published/manifest.csv",
    log:
        "results/logs/synthesis/published_samples.log",
    benchmark:
        "results/benchmarks/synthesis/published_samples.tsv"
    conda:
        "../envs/synthesis.yaml"
    params:
        path=config["synthesis"]["published"]["path"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" published-samples --path {params.path:q} --manifest {output} > {log} 2>&1'


rule medigan_samples:
    output:
        images=directory("results/synthesis/medigan/images"),
        manifest="results/synthesis/medigan/manifest.csv",
    log:
        "results/logs/synthesis/medigan_samples.log",
    benchmark:
        "results/benchmarks/synthesis/medigan_samples.tsv"
    conda:
        "../envs/synthesis.yaml"
    threads: config["synthesis"]["threads"]
    params:
        workdir=config["synthesis"]["medigan"]["workdir"],
        model_id=config["synthesis"]["medigan"]["model_id"],
        n=config["synthesis"]["n_per_class"],
        seed=config["synthesis"]["seed"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" medigan-samples --workdir {params.workdir:q} --model-id {params.model_id}'
        " --n-per-class {params.n} --seed {params.seed} --out-dir {output.images}"
        " --manifest {output.manifest} --threads {threads} > {log} 2>&1"
