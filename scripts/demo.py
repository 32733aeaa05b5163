from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.demo",
          lambda m: m.main(snakemake.output[0], snakemake.params.options))
