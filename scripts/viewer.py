from splatforge_core import viewer
from splatforge_core.workflow import run_stage

run_stage(snakemake, viewer,
          lambda m: m.main(snakemake.input.splat, snakemake.input.aligned, snakemake.output.viewer,
                           snakemake.input.views, snakemake.input.manifest, snakemake.wildcards.scene))
