from splatforge_core import video
from splatforge_core.workflow import run_stage

run_stage(snakemake, video,
          lambda m: m.main(snakemake.input.splat, snakemake.input.aligned, snakemake.output.video, snakemake.input.views))
