# The embedded demo capture: GPS-tagged equirectangular panoramas rendered from a textured
# 3D scene, plus ground_truth.json (true positions and orientations).


rule demo:
    output:
        directory("work/demo/capture"),
    params:
        options=lambda wildcards: config.get("demo", {}),
    log:
        "work/demo/logs/demo.log",
    script:
        "../scripts/demo.py"
