# Compress the trained splat PLY with the configured codec preset; JSON report beside it.


rule compress:
    input:
        splat=W("splat/splat.ply"),
    output:
        compressed=R(".compressed.ply"),
        report=R(".compressed.json"),
    params:
        preset=lambda wildcards: stage_options(wildcards.scene, "compress").get("preset", "qat-3dgs"),
        options=lambda wildcards: {k: v for k, v in stage_options(wildcards.scene, "compress").items() if k != "preset"},
    benchmark:
        W("benchmarks/compress.tsv")
    log:
        W("logs/compress.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/compress.py"
