# Train a 3D Gaussian splat on the geo-aligned model (gsplat on CUDA, torch tile compositor
# on CPU). Checkpoints live in work/{scene}/splat/checkpoints/ (not declared outputs, so Snakemake keeps
# them when a killed job is rerun and training resumes from the last one).


rule train:
    input:
        aligned=W("aligned"),
        images=W("images"),
        masks=W("masks"),
        views=W("views.json"),
    output:
        splat=W("splat/splat.ply"),
        metrics=W("splat/metrics.json"),
    params:
        out_dir=W("splat"),
        options=lambda wildcards: stage_options(wildcards.scene, "train"),
    threads: workflow.cores
    resources:
        gpu=lambda wildcards: 1 if config.get("use_gpu", False) else 0,
    benchmark:
        W("benchmarks/train.tsv")
    log:
        W("logs/train.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/train.py"
