# Export the trained splat as a textured mesh (Poisson + xatlas UV + baked atlas): glb, obj, fbx.


rule export_mesh:
    input:
        splat=W("splat/splat.ply"),
        aligned=W("aligned"),
    output:
        glb=R("_mesh.glb"),
        obj=R("_mesh.obj"),
        mtl=R("_mesh.mtl"),
        texture=R("_mesh.png"),
        fbx=R("_mesh.fbx"),
        report=W("export/export.json"),
    params:
        prefix=R("_mesh"),
        options=lambda wildcards: stage_options(wildcards.scene, "export"),
    threads: workflow.cores
    benchmark:
        W("benchmarks/export_mesh.tsv")
    log:
        W("logs/export.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/export.py"
