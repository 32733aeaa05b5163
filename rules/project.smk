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
    # Resources (SLURM profile; measured in benchmarks/results/e2e.md, sfm.md): 0.3-2.2 s and
    # 137-209 MB peak on the demo (12 panoramas 2048 px); a 5760 px GoPro panorama is 50 MB decoded
    # and each worker holds one with its maps, so 2 GB per 4 workers. Doubled on each retry.
    threads: cluster_threads(4)
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    benchmark:
        W("benchmarks/project.tsv")
    log:
        W("logs/project.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/project.py"
