# Compress the trained splat PLY with the configured codec preset; JSON report beside it.
# A preset that retrains (codec Preset.needs_bundle) reads the scene's bundle (rules/bundle.smk)
# instead: the splat with its cameras and images.


rule compress:
    input:
        unpack(compress_inputs),
    output:
        compressed=R(".compressed.ply"),
        report=R(".compressed.json"),
    params:
        preset=lambda wildcards: stage_options(wildcards.scene, "compress").get("preset", "qat-3dgs"),
        options=lambda wildcards: {k: v for k, v in stage_options(wildcards.scene, "compress").items() if k != "preset"},
        needs_bundle=lambda wildcards: preset_needs_bundle(wildcards.scene),
    # Measured: 0.2-0.5 s on the demo; the codec holds the PLY and its encoded copy (287 MB PLY:
    # 0.3 s encode at 876 MB/s), so 1 GB plus 4 bytes per PLY byte. (A retraining preset sets its
    # own needs when it lands.)
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, attempt: int(1000 + 4 * input.size_mb) * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    benchmark:
        W("benchmarks/compress.tsv")
    log:
        W("logs/compress.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/compress.py"
