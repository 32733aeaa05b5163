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
    # Measured: 13-55 s and 276-320 MB peak on the demo (144 views, 2 threads), 11 s and 556 MB on
    # lund (29 photos); SIFT holds one image (<= max_image_size 1600) per thread: 4 GB for 8.
    # A GPU only with use_gpu (SiftGPU needs a CUDA build of pycolmap; device: cpu asks none).
    threads: cluster_threads(8)
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=lambda wildcards: int(bool(config.get("use_gpu", False))
                                  and stage_options(wildcards.scene, "sfm.extract").get("device", "auto") != "cpu"),
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
    # Measured: 7-40 s and 164-210 MB peak (demo 8208 pairs, lund); the descriptor cache grows with
    # the image count. A GPU only with use_gpu, as for extraction.
    threads: cluster_threads(8)
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=lambda wildcards: int(bool(config.get("use_gpu", False))
                                  and stage_options(wildcards.scene, "sfm.match").get("device", "auto") != "cpu"),
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
    # Measured: 1.6-13 s and 126-207 MB peak (demo 144 views, lund 29); global mapping of thousands
    # of images needs GBs (bundle adjustment), hence 8 GB.
    threads: cluster_threads(8)
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
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
