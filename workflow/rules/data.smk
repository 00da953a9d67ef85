# Data stage: source -> lesions.csv -> crops + crop index -> split.json + crops.csv.


rule phantom:
    output:
        **case_csv_paths("results/phantom/metadata"),
        dicom=directory("results/phantom/CBIS-DDSM"),
        bcdr=directory("results/phantom/BCDR"),
    log:
        "results/logs/data/phantom.log",
    benchmark:
        "results/benchmarks/data/phantom.tsv"
    conda:
        "../envs/data.yaml"
    params:
        spec=as_json(config["data"]["phantom"]),
        csvs=case_csv_args,
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" phantom --spec {params.spec:q} --case-csvs {params.csvs}'
        " --dicom {output.dicom} --bcdr {output.bcdr} > {log} 2>&1"


rule tcia_metadata:
    output:
        **case_csv_paths("resources/tcia/metadata"),
    log:
        "results/logs/data/tcia_metadata.log",
    benchmark:
        "results/benchmarks/data/tcia_metadata.tsv"
    # Downloads run where Snakemake runs: cluster compute nodes often have no internet access,
    # and the download slot locks then live on one host. The directive, not localrules: it
    # follows the rule into a module under another name (use rule * from ... as x_*).
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        urls=as_json(config["data"]["tcia"]["metadata_urls"]),
        csvs=case_csv_args,
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" tcia-metadata --urls {params.urls:q} --out {params.csvs} > {log} 2>&1'


checkpoint tcia_series:
    input:
        mass_train=f"resources/tcia/metadata/{CASE_CSVS['mass_train']}",
        mass_test=f"resources/tcia/metadata/{CASE_CSVS['mass_test']}",
    output:
        series="resources/tcia/series.csv",
        patients="resources/tcia/patients.txt",
    log:
        "results/logs/data/tcia_series.log",
    benchmark:
        "results/benchmarks/data/tcia_series.tsv"
    # A download: runs where Snakemake runs (see tcia_metadata).
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        api_url=config["data"]["tcia"]["api_url"],
        collection=config["data"]["tcia"]["collection"],
        subset=tcia_subset_args,
        batch_size=config["data"]["tcia"]["batch_size"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" tcia-series --api-url {params.api_url} --collection {params.collection}'
        " --mass-train {input.mass_train} --mass-test {input.mass_test} {params.subset}"
        " --batch-size {params.batch_size} --out {output.series}"
        " --patients-out {output.patients} > {log} 2>&1"


rule tcia_batch:
    input:
        "resources/tcia/series.csv",
    output:
        # One folder per batch: each job writes only what it declares.
        dicom=directory(TCIA_BATCH["dicom"]),
        marker=TCIA_BATCH["marker"],
    log:
        "results/logs/data/tcia_batch/{batch}.log",
    benchmark:
        "results/benchmarks/data/tcia_batch/{batch}.tsv"
    # A download: runs where Snakemake runs (see tcia_metadata).
    localrule: True
    conda:
        "../envs/data.yaml"
    # Not a param: a politeness setting must not rerun finished downloads (and all downstream).
    # Not consumed from a pool either: the job itself holds one of this many slot locks.
    resources:
        tcia_connection_limit=config["data"]["tcia"]["connections"],
    params:
        api_url=config["data"]["tcia"]["api_url"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" tcia-batch --api-url {params.api_url} --series {input}'
        " --connections {resources.tcia_connection_limit}"
        " --batch {wildcards.batch} --root {output.dicom} --out {output.marker} > {log} 2>&1"


rule tcia_complete:
    input:
        series="resources/tcia/series.csv",
        batches=tcia_batch_markers,
    output:
        "resources/tcia/CBIS-DDSM.complete",
    log:
        "results/logs/data/tcia_complete.log",
    benchmark:
        "results/benchmarks/data/tcia_complete.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" tcia-complete --series {input.series} --batches {input.batches}'
        " --out {output} > {log} 2>&1"


rule lesions:
    input:
        unpack(lesion_inputs),
    output:
        f"{DATA}/lesions.csv",
    log:
        "results/logs/data/lesions.log",
    benchmark:
        "results/benchmarks/data/lesions.tsv"
    conda:
        "../envs/data.yaml"
    threads: config["data"]["threads"]
    params:
        args=lesion_args,
        contours=config["data"]["lesions"]["contours"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" lesions {params.args}'
        " --contours {params.contours} --workers {threads} --out {output} > {log} 2>&1"


rule crop:
    input:
        unpack(crop_inputs),
    output:
        crops=directory(f"{DATA}/crops"),
        index=f"{DATA}/crop_index.csv",
    log:
        "results/logs/data/crop.log",
    benchmark:
        "results/benchmarks/data/crop.tsv"
    conda:
        "../envs/data.yaml"
    threads: config["data"]["threads"]
    params:
        spec=as_json(config["data"]["crop"]),
        args=lesion_args,
        bcdr_intensity=config["data"]["bcdr"]["intensity"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" crop {params.args} --spec {params.spec:q}'
        " --bcdr-intensity {params.bcdr_intensity} --out-dir {output.crops}"
        " --index {output.index} --workers {threads} > {log} 2>&1"


rule fetch_published:
    input:
        # Shipped with the workflow: found from any working directory.
        checksums=workflow.source_path("../../resources/mammo_dp.sha256"),
    output:
        "resources/mammo_dp.verified",
    log:
        "results/logs/data/fetch_published.log",
    benchmark:
        "results/benchmarks/data/fetch_published.tsv"
    # A download: runs where Snakemake runs (see tcia_metadata).
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        url=config["data"]["processed"]["archive_url"],
        folders=published_folders,
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" fetch-published --url {params.url} --checksums {input.checksums}'
        " {params.folders} --out {output} > {log} 2>&1"


rule import_processed:
    input:
        "resources/mammo_dp.verified",
    output:
        index=f"{DATA}/processed/crop_index.csv",
        split=f"{DATA}/processed/published_split.json",
        duplicates=f"{DATA}/processed/duplicates.csv",
    log:
        "results/logs/data/import_processed.log",
    benchmark:
        "results/benchmarks/data/import_processed.tsv"
    conda:
        "../envs/data.yaml"
    params:
        path=config["data"]["processed"]["path"],
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" import-processed --path {params.path:q} --index {output.index}'
        " --split {output.split} --duplicates {output.duplicates} > {log} 2>&1"


rule split:
    input:
        index=crop_index(),
        split_file=split_file_input(),
    output:
        split=f"{DATA}/split.json",
        manifest=f"{DATA}/crops.csv",
    log:
        "results/logs/data/split.log",
    benchmark:
        "results/benchmarks/data/split.tsv"
    conda:
        "../envs/data.yaml"
    params:
        val_fraction=config["data"]["split"]["val_fraction"],
        seed=config["data"]["split"]["seed"],
        split_file=lambda wc, input: (
            f"--split-file {input.split_file}" if input.split_file else ""
        ),
    shell:
        '"$MAMMODP_PYTHON" "$MAMMODP" split --index {input.index} --val-fraction {params.val_fraction}'
        " --seed {params.seed} {params.split_file} --out-split {output.split}"
        " --out-manifest {output.manifest} > {log} 2>&1"
