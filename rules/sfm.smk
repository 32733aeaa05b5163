# Structure from motion (pycolmap) and geo-alignment to ENU.
# extract -> colmap/features.db; pairs -> pairs.txt; match -> colmap/database.db (a finished
# copy of features.db with verified matches); map -> sparse/; align -> aligned/ + alignment.json.


rule sfm_extract:
    input:
        images=W("images"),
        masks=W("masks"),
        views=W("views.json"),
    output:
        features=W("colmap/features.db"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.extract"),
    threads: workflow.cores
    resources:
        gpu=lambda wildcards: 1 if config.get("use_gpu", False) else 0,
    benchmark:
        W("benchmarks/sfm_extract.tsv")
    log:
        W("logs/sfm_extract.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_extract.py"


rule sfm_pairs:
    input:
        views=W("views.json"),
    output:
        pairs=W("pairs.txt"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.pairs"),
    benchmark:
        W("benchmarks/sfm_pairs.tsv")
    log:
        W("logs/sfm_pairs.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_pairs.py"


rule sfm_match:
    input:
        features=W("colmap/features.db"),
        pairs=W("pairs.txt"),
    output:
        database=W("colmap/database.db"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.match"),
    threads: workflow.cores
    benchmark:
        W("benchmarks/sfm_match.tsv")
    log:
        W("logs/sfm_match.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_match.py"


rule sfm_map:
    input:
        database=W("colmap/database.db"),
        images=W("images"),
    output:
        sparse=directory(W("sparse")),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.map"),
    threads: workflow.cores
    benchmark:
        W("benchmarks/sfm_map.tsv")
    log:
        W("logs/sfm_map.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_map.py"


rule sfm_align:
    input:
        sparse=W("sparse"),
        views=W("views.json"),
        manifest=W("manifest.json"),
    output:
        aligned=directory(W("aligned")),
        report=W("alignment.json"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "align"),
        ground_truth=demo_ground_truth_path,
    benchmark:
        W("benchmarks/sfm_align.tsv")
    log:
        W("logs/sfm_align.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_align.py"
