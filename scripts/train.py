from splatforge_core.train import trainer
from splatforge_core.workflow import run_stage

run_stage(snakemake, trainer,
          lambda m: m.main(snakemake.input.aligned, snakemake.input.images, snakemake.input.views,
                           snakemake.params.out_dir, snakemake.output.splat,
                           {"num_threads": snakemake.threads, **snakemake.params.options}))
