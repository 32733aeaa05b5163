# A run report per scene that a person can look at: Markdown + PNGs under results/{scene}_report/.


rule report:
    input:
        splat="work/{scene}/splat/splat.ply",
        alignment="work/{scene}/alignment.json",
        compressed="results/{scene}.compressed.json",
        export="work/{scene}/export/export.json",
    output:
        report=directory("results/{scene}_report"),
    params:
        scene_dir=lambda wildcards, input: os.path.dirname(input.alignment),
    benchmark:
        "work/{scene}/benchmarks/report.tsv"
    log:
        "work/{scene}/logs/report.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/report.py"
