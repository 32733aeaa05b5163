from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.sfm.align",
          lambda m: m.main(snakemake.input.sparse, snakemake.input.views, snakemake.output.aligned,
                           snakemake.output.report, snakemake.params.options))
