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
    # Measured: 56-152 s and 1.2-3.0 GB peak (demo splat, 1M-Gaussian sphere; export.md, e2e.md):
    # about 2.5 GB plus 4 bytes per byte of the splat PLY (248 MB for 1M SH-3 Gaussians).
    threads: cluster_threads(4)
    resources:
        mem_mb=lambda wildcards, input, attempt: int(2500 + 4 * input.size_mb) * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    benchmark:
        W("benchmarks/export_mesh.tsv")
    log:
        W("logs/export.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/export.py"
