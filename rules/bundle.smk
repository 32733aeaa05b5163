# Pack a scene's splat, registered images and cameras into a bundle (docs/formats.md, section
# Bundle) for a compress preset that retrains (codec Preset.needs_bundle). Only asked for by the
# compress rule when the scene's compress.preset needs one (compress_inputs in rules/common.smk).
#
# An uncompressed tar: it is an intermediate in work/, read once by compress on the same disk, and the
# images are PNG (deflated already). Measured on the demo (216 views, 100k Gaussians of SH degree 1;
# 2 shared cores at load 17): at 512 px the .tar is 71.4 MB in 52 s, a .tar.gz 67.3 MB (-6%) in
# 58 s, and validating it (open_bundle) takes 2.4 s against 4.4 s; at 128 px gzip -6 saves 21%
# (19.6 -> 15.5 MB: the PLY's constant normals and the model shrink, the PNGs do not).


rule bundle:
    input:
        splat=W("splat/splat.ply"),
        metrics=W("splat/metrics.json"),
        aligned=W("aligned"),
        images=W("images"),
        views=W("views.json"),
    output:
        bundle=W("bundle.tar"),
    params:
        workdir=lambda wildcards, input: os.path.dirname(input.views),
        max_side=bundle_fallback_max_side,
        # qat-bundle: the Scaffold-GS model of train.model: scaffold instead of the baked 3DGS splat
        scaffold=bundle_scaffold_dir,
    # pack_scene on the demo: 52 s and 480 MB peak at 512 px (above); it holds every undistorted
    # view in memory (load_scene), like train.
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    benchmark:
        W("benchmarks/bundle.tsv")
    log:
        W("logs/bundle.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/bundle.py"
