# A run report per scene that a person can look at: Markdown + PNGs under results/{scene}_report/.


rule report:
    input:
        splat=W("splat/splat.ply"),
        alignment=W("alignment.json"),
        compressed=R(".compressed.json"),
        export=W("export/export.json"),
    output:
        report=directory(R("_report")),
    params:
        scene_dir=lambda wildcards, input: os.path.dirname(input.alignment),
    benchmark:
        W("benchmarks/report.tsv")
    log:
        W("logs/report.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/report.py"
