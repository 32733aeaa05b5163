from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.sfm.match",
          lambda m: m.main(snakemake.input.features, snakemake.input.pairs, snakemake.output.database,
                           snakemake.params.options))
