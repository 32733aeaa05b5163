from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.sfm.pairs",
          lambda m: m.main(snakemake.input.views, snakemake.output.pairs, snakemake.params.options))
