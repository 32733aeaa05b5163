from splatforge_core.sfm import match
from splatforge_core.workflow import run_stage

run_stage(snakemake, match,
          lambda m: m.main(snakemake.input.features, snakemake.input.pairs, snakemake.output.database,
                           {"num_threads": snakemake.threads, **snakemake.params.options}))
