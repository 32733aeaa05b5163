from splatforge_core.sfm import merge
from splatforge_core.workflow import run_stage

run_stage(snakemake, merge, lambda m: m.place_cluster(snakemake.input.aligned, snakemake.input.merge,
                                                      snakemake.wildcards.cluster, snakemake.output.placed))
