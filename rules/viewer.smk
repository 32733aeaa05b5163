# Offline web viewer of a scene's splat (GaussianSplats3D from npm, vendored by scripts/install.sh):
# results/{scene}_viewer/index.html with the capture trajectory and an ENU/GPS readout.


rule viewer:
    input:
        splat=W("splat/splat.ply"),
        aligned=W("aligned"),
        views=W("views.json"),
        manifest=W("manifest.json"),
    output:
        viewer=directory(R("_viewer")),
    benchmark:
        W("benchmarks/viewer.tsv")
    log:
        W("logs/viewer.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/viewer.py"
