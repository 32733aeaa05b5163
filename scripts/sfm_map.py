from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.sfm.mapping",
          lambda m: m.main(snakemake.input.database, snakemake.input.images, snakemake.output.sparse,
                           snakemake.params.options))
