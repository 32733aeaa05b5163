import os

from splatforge_core.sfm import mapping
from splatforge_core.workflow import run_stage

run_stage(snakemake, mapping,
          lambda m: m.main(snakemake.input.database, snakemake.input.images, snakemake.output.sparse,
                           os.path.join(snakemake.output.sparse, "summary.json"),
                           {"num_threads": snakemake.threads, **snakemake.params.options}))
