# results/{scene}.ply is the canonical output and the last file of a scene to appear: it is
# published (atomically copied from work/{scene}/splat/splat.ply) only once the meshes, the
# compressed PLY and the run report exist, so `snakemake results/scene.ply` runs every stage.


rule publish:
    input:
        splat="work/{scene}/splat/splat.ply",
        meshes=multiext("results/{scene}_mesh", ".glb", ".obj", ".fbx"),
        compressed="results/{scene}.compressed.ply",
        report="results/{scene}_report",
    output:
        splat="results/{scene}.ply",
    benchmark:
        "work/{scene}/benchmarks/publish.tsv"
    log:
        "work/{scene}/logs/publish.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/publish.py"
