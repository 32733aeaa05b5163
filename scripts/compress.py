from splatforge_core import codec
from splatforge_core.workflow import run_stage

# a preset that retrains reads the bundle (splat + cameras + images), the others the splat PLY
source = snakemake.input.bundle if snakemake.params.needs_bundle else snakemake.input.splat
run_stage(snakemake, codec,
          lambda m: m.main(source, snakemake.output.compressed, snakemake.output.report,
                           snakemake.params.preset, snakemake.params.options))
