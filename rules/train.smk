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
    # Measured on CPU (2 threads, 1500 steps, <= 100k Gaussians): 331-838 s, 914-933 MB peak
    # (benchmarks/results/e2e.md). On CUDA (30000 steps, no Gaussian cap, full-resolution images in
    # host memory) not measured here: 8 GB and 3 h as an estimate, doubled on each retry; a job
    # killed at its time limit resumes from its last checkpoint on the retry, losing at most
    # checkpoint_every steps. torch (and the CPU rasteriser's numba) use `threads` threads.
    threads: cluster_threads(8)
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 180 * attempt,
        gpu=lambda wildcards: 1 if config.get("use_gpu", False) else 0,
    benchmark:
        W("benchmarks/train.tsv")
    log:
        W("logs/train.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/train.py"
