from splatforge_core import project
from splatforge_core.workflow import run_stage

run_stage(snakemake, project,
          lambda m: m.main(snakemake.input.manifest, snakemake.output.images, snakemake.output.views,
                           {"workers": snakemake.threads, **snakemake.params.options}, masks_dir=snakemake.output.masks))
