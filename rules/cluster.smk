# Clustered scenes (issue #12): k-means split by GPS, per-cluster map/align, merged model, a coarse
# pass over it (train_coarse), per-cluster training continuing that pass, merged splat. Only scenes in CLUSTERED_SCENES (rules/common.smk) run these rules; a one-block
# scene never does. The per-cluster rules are the one-block rules on the C() paths.


checkpoint cluster:
    input:
        views=W("views.json"),
    output:
        clusters=W("clusters.json"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "cluster"),
    wildcard_constraints:
        scene=scene_regex(CLUSTERED_SCENES),
    benchmark:
        W("benchmarks/cluster.tsv")
    log:
        W("logs/cluster.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/cluster.py"


# The scene's matched database, keeping only the cluster's images (ids unchanged).
rule sfm_cluster_database:
    input:
        database=W("colmap/database.db"),
        clusters=W("clusters.json"),
    output:
        database=C("colmap/database.db"),
    benchmark:
        C("benchmarks/sfm_cluster_database.tsv")
    log:
        C("logs/sfm_cluster_database.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_cluster_database.py"


# The one-block mapper on the cluster's database; a failure names the cluster and its frames
# (the other clusters' finished outputs stay for the rerun).
rule sfm_map_cluster:
    input:
        database=C("colmap/database.db"),
        images=W("images"),
        clusters=W("clusters.json"),
    output:
        sparse=directory(C("sparse")),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "sfm.map"),
    # as sfm_map (rules/sfm.smk): threads and memory of the one-block mapper, per attempt
    threads: cluster_threads(8)
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    benchmark:
        C("benchmarks/sfm_map.tsv")
    log:
        C("logs/sfm_map.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_map_cluster.py"


use rule sfm_align as sfm_align_cluster with:
    input:
        sparse=C("sparse"),
        views=W("views.json"),
        manifest=W("manifest.json"),
    output:
        aligned=directory(C("aligned")),
        report=C("alignment.json"),
    benchmark:
        C("benchmarks/sfm_align.tsv")
    log:
        C("logs/sfm_align.log"),


# Merged model at the one-block paths, so export and report read it unchanged.
rule sfm_merge:
    input:
        clusters=W("clusters.json"),
        aligned=per_cluster("aligned"),
        reports=per_cluster("alignment.json"),
        views=W("views.json"),
    output:
        aligned=directory(W("aligned")),
        report=W("alignment.json"),
        merge=W("merge.json"),
    wildcard_constraints:
        scene=scene_regex(CLUSTERED_SCENES),
    benchmark:
        W("benchmarks/sfm_merge.tsv")
    log:
        W("logs/sfm_merge.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_merge.py"


# A cluster's model moved by its chain alignment (merge.json): every cluster trains in the
# merged model's frame, so the cropped splats fit together.
rule sfm_place_cluster:
    input:
        aligned=C("aligned"),
        merge=W("merge.json"),
    output:
        placed=directory(C("placed")),
    benchmark:
        C("benchmarks/sfm_place_cluster.tsv")
    log:
        C("logs/sfm_place_cluster.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/sfm_place_cluster.py"


# The whole scene's coarse pass (cluster.coarse_fraction > 0): the first part of the training
# schedule on the merged model, which every cluster then continues on its own members.
use rule train as train_coarse with:
    input:
        aligned=W("aligned"),
        images=W("images"),
        masks=W("masks"),
        views=W("views.json"),
    output:
        splat=W("coarse/splat.ply"),
        metrics=W("coarse/metrics.json"),
        state=W("coarse/state.pt"),
    params:
        out_dir=W("coarse"),
        options=lambda wildcards: stage_options(wildcards.scene, "train"),
        cluster=lambda wildcards: stage_options(wildcards.scene, "cluster"),
        role="coarse",
    benchmark:
        W("benchmarks/train_coarse.tsv")
    log:
        W("logs/train_coarse.log"),


use rule train as train_cluster with:
    input:
        aligned=C("placed"),
        images=W("images"),
        masks=W("masks"),
        views=W("views.json"),
        init=coarse_pass_file("state.pt"),
    output:
        splat=C("splat/splat.ply"),
        metrics=C("splat/metrics.json"),
    params:
        out_dir=C("splat"),
        options=lambda wildcards: stage_options(wildcards.scene, "train"),
        cluster=lambda wildcards: stage_options(wildcards.scene, "cluster"),
        role="cluster",
    benchmark:
        C("benchmarks/train.tsv")
    log:
        C("logs/train.log"),


# Merged splat (each cluster cropped to its Voronoi cell) at the one-block paths.
rule splat_merge:
    input:
        clusters=W("clusters.json"),
        splats=per_cluster("splat/splat.ply"),
        metrics=per_cluster("splat/metrics.json"),
        views=W("views.json"),
        aligned=W("aligned"),
        images=W("images"),
        masks=W("masks"),
        coarse=coarse_pass_file("metrics.json"),
    output:
        splat=W("splat/splat.ply"),
        metrics=W("splat/metrics.json"),
        merge=W("splat/merge.json"),
    params:
        train=lambda wildcards: stage_options(wildcards.scene, "train"),
    wildcard_constraints:
        scene=scene_regex(CLUSTERED_SCENES),
    benchmark:
        W("benchmarks/splat_merge.tsv")
    log:
        W("logs/splat_merge.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/splat_merge.py"


ruleorder: sfm_merge > sfm_align
ruleorder: splat_merge > train
