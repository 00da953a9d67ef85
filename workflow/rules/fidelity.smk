# Fidelity stage: Frechet Radiomics Distance between real and synthetic crops.


rule frd:
    input:
        manifest=f"{DATA}/crops.csv",
        synthetic=synthetic_manifest(),
    output:
        "results/fidelity/frd.csv",
    log:
        "results/logs/fidelity/frd.log",
    benchmark:
        "results/benchmarks/fidelity/frd.tsv"
    conda:
        "../envs/fidelity.yaml"
    threads: config["fidelity"]["threads"]
    params:
        versions=" ".join(config["fidelity"]["frd_versions"]),
        seed=config["fidelity"]["seed"],
        design=config["fidelity"]["design"],
        normalisation=config["fidelity"]["normalisation"],
        max_images=(
            f"--max-images {config['fidelity']['max_images']}"
            if config["fidelity"]["max_images"]
            else ""
        ),
        set_size=(
            f"--set-size {config['fidelity']['set_size']}"
            if config["fidelity"]["set_size"]
            else ""
        ),
    shell:
        "mammodp frd --manifest {input.manifest} --synthetic {input.synthetic}"
        " --versions {params.versions} --seed {params.seed} --threads {threads}"
        " --design {params.design} --normalisation {params.normalisation}"
        " {params.max_images} {params.set_size} --out {output} > {log} 2>&1"
