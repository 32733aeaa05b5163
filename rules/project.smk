# Project: equirectangular panoramas -> pinhole views forming one rig frame per panorama
# (perspective photos are linked as they are), with views.json describing cameras and rig.


rule project:
    input:
        manifest="work/{scene}/manifest.json",
    output:
        images=directory("work/{scene}/images"),
        masks=directory("work/{scene}/masks"),
        views="work/{scene}/views.json",
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "project"),
    threads: workflow.cores
    benchmark:
        "work/{scene}/benchmarks/project.tsv"
    log:
        "work/{scene}/logs/project.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/project.py"
