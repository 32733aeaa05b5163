# Project: equirectangular panoramas -> pinhole views forming one rig frame per panorama
# (perspective photos are linked as they are), with views.json describing cameras and rig.


rule project:
    input:
        manifest=W("manifest.json"),
    output:
        images=directory(W("images")),
        masks=directory(W("masks")),
        views=W("views.json"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "project"),
    threads: workflow.cores
    benchmark:
        W("benchmarks/project.tsv")
    log:
        W("logs/project.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/project.py"
