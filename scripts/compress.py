from splatforge_core import codec
from splatforge_core.workflow import run_stage

run_stage(snakemake, codec,
          lambda m: m.main(snakemake.input.splat, snakemake.output.compressed, snakemake.output.report,
                           snakemake.params.preset, snakemake.params.options))
