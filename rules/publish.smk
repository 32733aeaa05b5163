# results/{scene}.ply is the canonical output and the last file of a scene to appear: it is
# published (atomically copied from work/{scene}/splat/splat.ply) only once the meshes, the
# compressed PLY and the run report exist, so `snakemake results/scene.ply` runs every stage.


rule publish:
    input:
        splat=W("splat/splat.ply"),
        meshes=multiext(R("_mesh"), ".glb", ".obj", ".fbx"),
        compressed=R(".compressed.ply"),
        report=R("_report"),
    output:
        splat=R(".ply"),
    benchmark:
        W("benchmarks/publish.tsv")
    log:
        W("logs/publish.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/publish.py"
