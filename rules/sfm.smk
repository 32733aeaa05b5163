# Structure from motion (pycolmap) and geo-alignment to ENU.
# extract -> colmap/features.db; pairs -> pairs.txt; match -> colmap/database.db (a finished
# copy of features.db with verified matches); map -> sparse/; align -> aligned/ + alignment.json.


rule sfm_extract:
    input:
        images="work/{scene}/images",
        masks="work/{scene}/masks",
        views="work/{scene}/views.json",
    output:
        features="work/{scene}/colmap/features.db",
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.extract"),
    threads: workflow.cores
    resources:
        gpu=lambda wildcards: 1 if config.get("use_gpu", False) else 0,
    benchmark:
        "work/{scene}/benchmarks/sfm_extract.tsv"
    log:
        "work/{scene}/logs/sfm_extract.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_extract.py"


rule sfm_pairs:
    input:
        views="work/{scene}/views.json",
    output:
        pairs="work/{scene}/pairs.txt",
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.pairs"),
    benchmark:
        "work/{scene}/benchmarks/sfm_pairs.tsv"
    log:
        "work/{scene}/logs/sfm_pairs.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_pairs.py"


rule sfm_match:
    input:
        features="work/{scene}/colmap/features.db",
        pairs="work/{scene}/pairs.txt",
    output:
        database="work/{scene}/colmap/database.db",
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.match"),
    threads: workflow.cores
    benchmark:
        "work/{scene}/benchmarks/sfm_match.tsv"
    log:
        "work/{scene}/logs/sfm_match.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_match.py"


rule sfm_map:
    input:
        database="work/{scene}/colmap/database.db",
        images="work/{scene}/images",
    output:
        sparse=directory("work/{scene}/sparse"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.map"),
    threads: workflow.cores
    benchmark:
        "work/{scene}/benchmarks/sfm_map.tsv"
    log:
        "work/{scene}/logs/sfm_map.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_map.py"


rule sfm_align:
    input:
        sparse="work/{scene}/sparse",
        views="work/{scene}/views.json",
        manifest="work/{scene}/manifest.json",
    output:
        aligned=directory("work/{scene}/aligned"),
        report="work/{scene}/alignment.json",
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "align"),
        ground_truth=demo_ground_truth_path,
    benchmark:
        "work/{scene}/benchmarks/sfm_align.tsv"
    log:
        "work/{scene}/logs/sfm_align.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_align.py"
