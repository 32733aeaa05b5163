from splatforge_core import cluster
from splatforge_core.workflow import run_stage

run_stage(snakemake, cluster, lambda m: m.main(snakemake.input.views, snakemake.output.clusters, snakemake.params.options))
