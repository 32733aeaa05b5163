from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.sfm.extract",
          lambda m: m.main(snakemake.input.images, snakemake.input.views, snakemake.output.features,
                           snakemake.params.options))
