# Ingest: EXIF GPS of the input photos -> manifest.json (positions in local ENU metres).


rule ingest:
    input:
        photos=scene_input,
    output:
        manifest="work/{scene}/manifest.json",
    params:
        options=lambda wildcards: stage_options(wildcards.scene, "ingest"),
    benchmark:
        "work/{scene}/benchmarks/ingest.tsv"
    log:
        "work/{scene}/logs/ingest.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/ingest.py"
