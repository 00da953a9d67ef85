# Fidelity stage: Frechet Radiomics Distance between real and synthetic crops.


rule frd:
    input:
        manifest=f"{DATA}/crops.csv",
        images=made_images("real"),
        synthetic=synthetic_manifest(),
        synthetic_images=made_images("synthetic"),
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
        images=images_arg("images", "real"),
        synthetic_images=images_arg("synthetic_images", "synthetic"),
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
        '"$MAMMODP_PYTHON" "$MAMMODP" frd --manifest {input.manifest} --images {params.images}'
        " --synthetic {input.synthetic} --synthetic-images {params.synthetic_images}"
        " --versions {params.versions} --seed {params.seed} --threads {threads}"
        " --design {params.design} --normalisation {params.normalisation}"
        " {params.max_images} {params.set_size} --out {output} > {log} 2>&1"
