# Pack a scene's splat, registered images and cameras into a bundle (docs/formats.md, section
# Bundle) for a compress preset that retrains (codec Preset.needs_bundle). Only asked for by the
# compress rule when the scene's compress.preset needs one (compress_inputs in rules/common.smk).
#
# An uncompressed tar: it is an intermediate in work/, read once by compress on the same disk, and the
# images are PNG (deflated already). Measured on the demo bundle (216 views at 128 px, 100k Gaussians
# of SH degree 1): gzip -6 makes 19.6 MB into 15.5 MB (-21%, mostly the PLY's constant normals and
# the sparse model; the PNGs do not shrink) for 1 s of CPU to write and again to read.


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
    # Not measured yet in the workflow; pack_scene on the demo (216 views at 128 px, 100k
    # Gaussians): 16 s, 20 MB. It holds every undistorted view in memory (load_scene), like train.
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
