import os

from splatforge_core.sfm import merge
from splatforge_core.workflow import run_stage

run_stage(snakemake, merge,
          lambda m: m.map_cluster(snakemake.input.clusters, snakemake.wildcards.cluster, snakemake.input.database,
                                  snakemake.input.images, snakemake.output.sparse,
                                  os.path.join(snakemake.output.sparse, "summary.json"),
                                  {"num_threads": snakemake.threads, **snakemake.params.options}))
