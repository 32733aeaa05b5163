from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.codec",
          lambda m: m.main(snakemake.input.splat, snakemake.output.compressed, snakemake.output.report,
                           snakemake.params.preset, snakemake.params.options))
