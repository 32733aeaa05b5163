# The embedded demo capture: GPS-tagged equirectangular panoramas rendered from a textured
# 3D scene, plus ground_truth.json (true positions and orientations).


rule demo:
    output:
        # demo.main builds work/demo/capture as a whole (temp folder, then rename).
        images=directory("work/demo/capture/images"),
        ground_truth="work/demo/capture/ground_truth.json",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.ground_truth),
        options=lambda wildcards: config.get("demo", {}),
    benchmark:
        "work/demo/benchmarks/demo.tsv"
    log:
        "work/demo/logs/demo.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/demo.py"
