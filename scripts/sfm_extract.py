from splatforge_core.sfm import extract
from splatforge_core.workflow import run_stage

run_stage(snakemake, extract,
          lambda m: m.main(snakemake.input.images, snakemake.input.views, snakemake.output.features,
                           {"num_threads": snakemake.threads, **snakemake.params.options}))
