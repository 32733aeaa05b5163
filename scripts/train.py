from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.train.trainer",
          lambda m: m.main(snakemake.input.aligned, snakemake.input.images, snakemake.input.views,
                           snakemake.params.out_dir, snakemake.output.splat, snakemake.params.options))
