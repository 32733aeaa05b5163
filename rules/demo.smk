# The embedded demo capture: GPS-tagged equirectangular panoramas rendered from a textured
# 3D scene, plus ground_truth.json (true positions and orientations).


rule demo:
    output:
        # demo.main builds work/demo/capture as a whole (temp folder, then rename).
        images=directory(f"{DEMO_DIR}/capture/images"),
        ground_truth=f"{DEMO_DIR}/capture/ground_truth.json",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.ground_truth),
        options=lambda wildcards: config.get("demo", {}),
    benchmark:
        f"{DEMO_DIR}/benchmarks/demo.tsv"
    log:
        f"{DEMO_DIR}/logs/demo.log",
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/demo.py"
