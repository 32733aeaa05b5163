from splatforge_core import demo
from splatforge_core.workflow import run_stage

run_stage(snakemake, demo, lambda m: m.main(snakemake.params.out_dir, snakemake.params.options))
