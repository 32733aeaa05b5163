from splatforge_core import ingest
from splatforge_core.workflow import run_stage

run_stage(snakemake, ingest,
          lambda m: m.main(snakemake.input.photos, snakemake.output.manifest, snakemake.params.options))
