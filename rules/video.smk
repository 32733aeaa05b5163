# Fly-through video along the smoothed capture trajectory, rendered on CPU (splatforge_core.video).
# Not a deliverable of the default target (about 2-3 s a frame for the demo's 100k Gaussians on 2
# busy cores): ask for it, e.g. `snakemake --cores all results/scene_flythrough.mp4`.


rule flythrough:
    input:
        splat=W("splat/splat.ply"),
        aligned=W("aligned"),
        views=W("views.json"),
    output:
        video=R("_flythrough.mp4"),
    benchmark:
        W("benchmarks/flythrough.tsv")
    log:
        W("logs/flythrough.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/flythrough.py"
