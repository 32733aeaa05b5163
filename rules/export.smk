# Export the trained splat as a textured mesh (Poisson + xatlas UV + baked atlas): glb, obj, fbx.


rule export_mesh:
    input:
        splat="work/{scene}/splat/splat.ply",
        aligned="work/{scene}/aligned",
    output:
        glb="results/{scene}_mesh.glb",
        obj="results/{scene}_mesh.obj",
        mtl="results/{scene}_mesh.mtl",
        texture="results/{scene}_mesh.png",
        fbx="results/{scene}_mesh.fbx",
        report="work/{scene}/export/export.json",
    params:
        prefix="results/{scene}_mesh",
        options=lambda wildcards: stage_options(wildcards.scene, "export"),
    threads: workflow.cores
    benchmark:
        "work/{scene}/benchmarks/export_mesh.tsv"
    log:
        "work/{scene}/logs/export.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/export.py"
