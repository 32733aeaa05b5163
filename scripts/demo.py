from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.demo",
          lambda m: m.main(snakemake.params.out_dir, snakemake.params.options))
