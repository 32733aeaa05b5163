import os

from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.sfm.mapping",
          lambda m: m.main(snakemake.input.database, snakemake.input.images, snakemake.output.sparse,
                           os.path.join(snakemake.output.sparse, "summary.json"), snakemake.params.options))
