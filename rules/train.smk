# Train a 3D Gaussian splat on the geo-aligned model (gsplat on CUDA, torch tile compositor
# on CPU). Checkpoints live in work/{scene}/splat/checkpoints/ (not declared outputs, so Snakemake keeps
# them when a killed job is rerun and training resumes from the last one).


rule train:
    input:
        aligned="work/{scene}/aligned",
        images="work/{scene}/images",
        masks="work/{scene}/masks",
        views="work/{scene}/views.json",
    output:
        splat="work/{scene}/splat/splat.ply",
        metrics="work/{scene}/splat/metrics.json",
    params:
        out_dir="work/{scene}/splat",
        options=lambda wildcards: stage_options(wildcards.scene, "train"),
    threads: workflow.cores
    resources:
        gpu=lambda wildcards: 1 if config.get("use_gpu", False) else 0,
    benchmark:
        "work/{scene}/benchmarks/train.tsv"
    log:
        "work/{scene}/logs/train.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/train.py"
