from splatforge_core.sfm import pairs
from splatforge_core.workflow import run_stage

run_stage(snakemake, pairs, lambda m: m.main(snakemake.input.views, snakemake.output.pairs, snakemake.params.options))
