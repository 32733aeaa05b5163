# Ingest: EXIF GPS of the input photos -> manifest.json (positions in local ENU metres).


rule ingest:
    input:
        photos=scene_input,
    output:
        manifest=W("manifest.json"),
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "ingest"),
    benchmark:
        W("benchmarks/ingest.tsv")
    log:
        W("logs/ingest.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/ingest.py"
